"""Face verification behind one interface: start (a URL to send the user to), then a server-side query."""
