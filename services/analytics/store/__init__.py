"""PostgreSQL for analytics: the schema and its migrations, the read models' writes and reads."""
