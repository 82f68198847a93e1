"""Development only: the sandbox, the terminal chat client, the demo world and the platform fakes."""
