"""End-to-end tests: real twistd processes on free loopback ports."""
