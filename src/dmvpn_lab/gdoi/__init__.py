"""GDOI (RFC 6407) key server and group member.

The protocol engine (``ks``, ``gm``, ``phase1``, ``codec``, ``crypto``) is sans-I/O: bytes and the
current time go in, datagrams, timers and events come out.  ``daemon`` does the UDP and timer I/O and
``xfrm`` is the only module that changes the kernel.
"""
