"""unetlib."""
