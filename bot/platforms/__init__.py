"""Platform adapters: one module per platform (inbound protocol) plus its API client."""
