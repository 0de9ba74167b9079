"""Inbound webhooks: each provider's signature scheme, the ASGI receiver and the inbox it fills.

`verifiers` checks a request exactly as its provider signs it; `schemes` binds a provider name to
its verifier and the credential fields it needs; `events` splits a verified body into inbox
events; `inbox` stores and hands them to the real_time sensor; `app` is the `esm webhooks serve`
application.
"""
