"""Who a person is: verified identities bound to platform accounts, and face verification."""
