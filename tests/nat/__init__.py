"""NAT traversal tests in Linux network namespaces (issue 7).

``topology`` builds throw-away topologies (a public segment, nftables masquerade routers, hosts
behind them) out of ``ip netns``, veth pairs and bridges; ``netns_peer`` is the small script the
tests run inside a namespace. Every test here needs root, ``ip`` and ``nft`` and is marked
``netns``; without them the tests skip with the reason.
"""
