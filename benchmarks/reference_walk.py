"""The benchmarks' baseline: Open-Assistant's SFT rule as a plain recursive walk over dicts.

Deliberately naive (stdlib json, recursion, string concatenation): it is what the package is
measured against, in the child processes of bench_threads.py and bench_build.py.
"""

from __future__ import annotations

MARKER = {"prompter": "<|prompter|>", "assistant": "<|assistant|>"}


def visit(node: dict, parents: list, out: list) -> None:
    thread = parents + [node]
    replies = node.get("replies") or []
    if len(thread) > 1 and not replies and (node["role"] == "assistant" or thread[-2]["replies"][0] is node):
        if not any(m.get("deleted") or m.get("synthetic") for m in thread):
            if thread[-1]["role"] == "prompter":
                thread = thread[:-1]
            out.append("".join(MARKER[m["role"]] + m["text"] + "<|endoftext|>" for m in thread))
    for reply in replies:
        visit(reply, thread, out)


def keep_tree(tree: dict) -> bool:
    prompt = tree["prompt"]
    return tree.get("tree_state") == "ready_for_export" and bool(prompt.get("review_result")) and prompt.get("lang") == "en"
