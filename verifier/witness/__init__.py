"""A transparency-log witness (c2sp.org/tlog-witness) that an auditor can run on their own.

The witness keeps, per log it follows, the latest checkpoint it cosigned, and cosigns a new
checkpoint only when a consistency proof shows it extends that one (c2sp.org/tlog-cosignature
v1, Ed25519). A log that forks (two roots for one size) or shrinks is refused, so a quorum of
independent witnesses stops the registry from showing different auditors different trees.

    state.py     durable state: latest (size, root) per log origin, atomic JSON writes
    protocol.py  the add-checkpoint rules and status codes (imports state)
    server.py    the HTTP service around protocol (`hallmark witness`)
    client.py    what a log calls to obtain cosignatures (no server code)
"""
