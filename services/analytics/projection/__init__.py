"""The pure projection: who an event engages, the fold into participant states, the counts
those states make, and the projection kept in memory. No I/O: nothing here awaits."""
