#!/usr/bin/env python3
"""Writes eip191.json: personal_sign (EIP-191) signatures and EIP-55 checksums made by
eth-account / eth-utils (PyPI), so poolhub's signature check is tested against a well-known
implementation, not only against itself.

    pip install eth-account==0.14.0
    python3 tests/vectors/gen_eip191.py > tests/vectors/eip191.json

The keys are the first Hardhat/Anvil development accounts (public test keys; never fund them)
plus one random-looking key, so the vectors also pin the well-known key -> address pairs.
"""
import json

import eth_account
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import to_checksum_address

KEYS = [
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x1111111111111111111111111111111111111111111111111111111111111111",
]


def siwe(domain, address, statement, uri, chain_id, nonce, issued, expires):
    # EIP-4361's layout, written out here independently of poolhub's code.
    return (
        f"{domain} wants you to sign in with your Ethereum account:\n"
        f"{address}\n\n{statement}\n\n"
        f"URI: {uri}\nVersion: 1\nChain ID: {chain_id}\nNonce: {nonce}\n"
        f"Issued At: {issued}\nExpiration Time: {expires}"
    )


def main():
    signed = []
    messages = ["hello", "", "poolhub ✓ unicode", "line one\nline two"]
    for i, key in enumerate(KEYS):
        acct = Account.from_key(key)
        for m in messages[: 1 + i % len(messages)]:
            sig = acct.sign_message(encode_defunct(text=m)).signature.hex()
            signed.append({"address": acct.address, "message": m,
                           "signature": "0x" + sig.removeprefix("0x")})
    acct = Account.from_key(KEYS[0])
    msg = siwe("pool.example:8000", acct.address, "Register this address with the pool hub.",
               "http://pool.example:8000/api/v1/miners/register", 1, "k3Xv9QmN2pLw7RtA",
               "2026-01-01T00:00:00.000Z", "2026-01-01T00:05:00.000Z")
    sig = acct.sign_message(encode_defunct(text=msg)).signature.hex()
    signed.append({"address": acct.address, "message": msg,
                   "signature": "0x" + sig.removeprefix("0x")})
    checksum = []
    for lower in ["0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed",
                  "0xfb6916095ca1df60bb79ce92ce3ea74c37c5d359",
                  "0xdbf03b407c01e7cd3cbea99509d93f8dddc8c6fb",
                  "0xd1220a0cf47c7b9be7a2e6ba89f429762e7b9adb",
                  "0x0000000000000000000000000000000000000000"] + [
                      Account.from_key(k).address.lower() for k in KEYS]:
        checksum.append({"lower": lower, "checksummed": to_checksum_address(lower)})
    print(json.dumps({"source": f"eth-account {eth_account.__version__} (PyPI), "
                      "tests/vectors/gen_eip191.py",
                      "personal_sign": signed, "checksum": checksum}, indent=1,
                     ensure_ascii=False))


main()
