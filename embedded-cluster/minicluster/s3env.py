"""`python -m minicluster.s3env READY_JSON`: the embedded cluster's object store as shell exports of
the standard AWS_* variables (`eval "$(make -s s3-env)"`), for `kubeforge push`, any AWS client, and
`make s3-secret`. The endpoint is the bridge gateway's, which the host and the pods both reach."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path


def exports(ready: Path) -> str:
    store = json.loads(ready.read_text()).get("objectStore")
    if not store:
        raise SystemExit(f"{ready}: the cluster runs no object store")
    values = {"AWS_ENDPOINT_URL": store["endpoint"], "AWS_ACCESS_KEY_ID": store["accessKey"],
              "AWS_SECRET_ACCESS_KEY": store["secretKey"], "AWS_REGION": store.get("region", "us-east-1")}
    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in values.items())


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m minicluster.s3env READY_JSON")
    try:
        print(exports(Path(sys.argv[1])))
    except FileNotFoundError:
        raise SystemExit(f"{sys.argv[1]}: no such file (start the cluster: make cluster-up)") from None
