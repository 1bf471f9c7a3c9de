"""The `engage` command: run everything, run one service, feed a demo."""
