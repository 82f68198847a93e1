"""The WeChat mini program (小程序): message push in, customer-service and subscription messages out, login."""
