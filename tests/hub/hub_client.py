"""Drives the real huggingface_hub client for tests/e2e/hub.rs.

Usage: hub_client.py COMMAND REPO [ARGS...]; the endpoint, token and cache come from the
environment (HF_ENDPOINT, HF_TOKEN, HF_HOME), exactly as a committer (or, for the upload
commands, a vendor) would set them.
Prints one JSON object: the result, or {"error": <class>, "classes": [<class and bases>],
"status": <HTTP status or null>, "message": <text the user sees>}.
"""

import json
import os
import sys

from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.utils import build_hf_headers
from huggingface_hub.utils._pagination import paginate


def run(command, repo, args):
    api = HfApi()
    if command == "snapshot":
        revision = args[0] if args else None
        return {"path": snapshot_download(repo, revision=revision)}
    if command == "download":
        filename = args[0]
        revision = args[1] if len(args) > 1 else None
        return {"path": hf_hub_download(repo, filename, revision=revision)}
    if command == "info":
        revision = args[0] if args else None
        info = api.model_info(repo, revision=revision, files_metadata=True)
        return {
            "id": info.id,
            "sha": info.sha,
            "siblings": [
                {
                    "path": s.rfilename,
                    "size": s.size,
                    "blob_id": s.blob_id,
                    "lfs_sha256": s.lfs.sha256 if s.lfs else None,
                }
                for s in info.siblings
            ],
        }
    if command == "tree":
        revision = args[0] if args else None
        entries = api.list_repo_tree(repo, revision=revision, recursive=True)
        return {
            "entries": [
                {
                    "path": e.path,
                    "type": "file" if hasattr(e, "size") else "directory",
                    "lfs_sha256": getattr(e, "lfs", None) and e.lfs.sha256,
                }
                for e in entries
            ]
        }
    if command == "files":
        return {"files": api.list_repo_files(repo)}
    if command == "paginate":
        # The client's own pagination (it follows `Link: <...>; rel="next"`), with the
        # parameters list_repo_tree sends, plus small pages.
        url = args[0]
        params = {"recursive": True, "expand": False, "limit": 2}
        return {"entries": [e["path"] for e in paginate(url, params=params, headers=build_hf_headers())]}
    if command == "create":
        # args: [strict] -- without it, exist_ok=True as vendors' scripts call it
        url = api.create_repo(repo, private=True, exist_ok=not args)
        return {"url": str(url), "repo_id": url.repo_id}
    if command == "upload_folder":
        info = api.upload_folder(repo_id=repo, folder_path=args[0], commit_message=args[1] if len(args) > 1 else None)
        return {"commit": info.oid, "url": info.commit_url}
    if command == "upload_file":
        info = api.upload_file(path_or_fileobj=args[0], path_in_repo=args[1], repo_id=repo)
        return {"commit": info.oid, "url": info.commit_url}
    if command == "commit":
        # args: add:PATH_IN_REPO:LOCAL_FILE, text:PATH_IN_REPO:CONTENT, delete:PATH,
        # deletefolder:PATH, parent:SHA, message:TEXT
        operations, parent, message = [], None, "a commit of several operations"
        for arg in args:
            kind, _, rest = arg.partition(":")
            if kind == "add":
                path, _, local = rest.partition(":")
                operations.append(CommitOperationAdd(path_in_repo=path, path_or_fileobj=local))
            elif kind == "text":
                path, _, content = rest.partition(":")
                operations.append(CommitOperationAdd(path_in_repo=path, path_or_fileobj=content.encode()))
            elif kind == "delete":
                operations.append(CommitOperationDelete(path_in_repo=rest))
            elif kind == "deletefolder":
                operations.append(CommitOperationDelete(path_in_repo=rest, is_folder=True))
            elif kind == "parent":
                parent = rest
            elif kind == "message":
                message = rest
            else:
                raise SystemExit(f"unknown operation {arg}")
        info = api.create_commit(repo, operations, commit_message=message, parent_commit=parent)
        return {"commit": info.oid, "url": info.commit_url}
    raise SystemExit(f"unknown command {command}")


def main():
    command, repo, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    try:
        out = run(command, repo, args)
    except Exception as e:  # reported to the test as data
        response = getattr(e, "response", None)
        out = {
            "error": type(e).__name__,
            "classes": [c.__name__ for c in type(e).__mro__],
            "status": getattr(response, "status_code", None),
            "message": str(e),
        }
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    assert os.environ.get("HF_ENDPOINT"), "set HF_ENDPOINT"
    main()
