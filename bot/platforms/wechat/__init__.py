"""WeChat: the inbound protocol (verify, decrypt, parse) and the API client with its outbox sender."""
