"""Helpers the Lab tests share."""


def established(lab, port=8080):
    """A connection of ours in ESTABLISHED with a kernel socket of the lab:
    (our Connection, the kernel's accepted socket)."""
    server = lab.listen(port)
    conn = lab.connect(port)
    peer, _ = server.accept()
    return conn, peer
