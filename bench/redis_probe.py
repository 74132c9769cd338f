"""What one Redis round trip costs redis-py's asyncio client on uvloop (template only).

Run it under callgrind twice, with N and M calls, in the baked project's virtualenv:

    valgrind --tool=callgrind --callgrind-out-file=/tmp/p100 python bench/redis_probe.py 100
    valgrind --tool=callgrind --callgrind-out-file=/tmp/p600 python bench/redis_probe.py 600

(the difference of the two `Collected` totals over 500 is the instructions per
`EVALSHA` round trip), with and without `hiredis` installed. `REDIS_URL` names the
server (default redis://127.0.0.1:6379/0); the probe writes one key and deletes it.
"""

from __future__ import annotations

import os
import secrets
import sys

import redis.asyncio as aioredis
import uvloop

SCRIPT = "return redis.call('INCR', KEYS[1])"


async def main(calls: int) -> None:
    """Load the script, call it 50 times uncounted, then `calls` times."""
    client = aioredis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    key = f"bench-probe-{secrets.token_hex(4)}"
    sha = await client.script_load(SCRIPT)
    for _ in range(50 + calls):
        await client.evalsha(sha, 1, key)
    await client.delete(key)
    await client.aclose()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
