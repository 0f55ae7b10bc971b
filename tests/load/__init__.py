"""Load and fault tests: real web servers and a real Redis, over real sockets."""
