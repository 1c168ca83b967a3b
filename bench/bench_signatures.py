"""Signatures on a thread per core: sign_each and verify_each against one loop of the same calls in this process.

    .venv/bin/python bench/bench_signatures.py [--messages 20000] [--rounds 5]

PyNaCl calls libsodium with the GIL released, so threads of one process sign and check in parallel; the ratio
threads / one loop (median over alternating rounds, with its range) is what the stages and verify-chain gain from
it on this machine (1 / cores at best; the messages' canonical encoding still holds the GIL).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from rounds import alternating_rounds, print_rounds

from gonka_pipelines.protocol.crypto import KeyPair, MessageKind, sign_each, verify, verify_each

CHAIN_ID = "bench-signatures"
KIND = MessageKind.POC_VERDICT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    keys = [KeyPair.derive(CHAIN_ID, f"host-{i}", "bench") for i in range(1_000)]
    signings = [(keys[i % len(keys)], {"epoch": 1, "validator": keys[i % len(keys)].address, "hosts": [str(i)] * 16,
                                       "sampled": [6] * 16, "mismatches": [0] * 16, "valid": [True] * 16})
                for i in range(args.messages)]
    signatures = sign_each(CHAIN_ID, KIND, signings)
    checks = [(key.public_key, body, signature) for (key, body), signature in zip(signings, signatures)]
    paths: dict[str, Callable[[], object]] = {
        "sign, one loop": lambda: [key.sign(CHAIN_ID, KIND, body) for key, body in signings],
        "sign_each": lambda: sign_each(CHAIN_ID, KIND, signings),
        "verify, one loop": lambda: [verify(key, CHAIN_ID, KIND, body, signature) for key, body, signature in checks],
        "verify_each": lambda: verify_each(CHAIN_ID, KIND, checks),
    }
    timings = alternating_rounds(paths, args.rounds, args.messages)
    print(f"bench_signatures: {args.messages:,} messages, {args.rounds} rounds, {os.cpu_count()} core(s)")
    print_rounds(timings, "a message", [(f"{operation}: threads / one loop", f"{operation}_each", f"{operation}, one loop")
                                        for operation in ("sign", "verify")])

if __name__ == "__main__":
    main()
