"""`python -m examples.replyx_host init` (the host's tables, then ours) or `... token USER_ID`."""

from __future__ import annotations

import sys

from examples.replyx_host.auth import issue_token
from examples.replyx_host.config import engine
from examples.replyx_host.schema import metadata


def main(argv: list[str]) -> int:
    if argv[:1] == ["init"]:
        from notifier.config import get_settings
        from notifier.db import get_engine
        from notifier.migrate import upgrade

        metadata.create_all(engine())  # the host's own migrations, in a real host
        upgrade(get_engine(get_settings().database_url))  # `notifier init-db`, beside them
        return 0
    if len(argv) == 2 and argv[0] == "token" and argv[1].isdigit():
        print(issue_token(int(argv[1])))
        return 0
    print("usage: python -m examples.replyx_host init | token USER_ID", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
