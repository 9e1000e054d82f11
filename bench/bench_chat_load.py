"""The chat server under concurrent load (issue 8): throughput, latency, cross-talk, memory.

    .venv/bin/python bench/bench_chat_load.py                 # both phases, 20 clients
    .venv/bin/python bench/bench_chat_load.py --skip-llm      # retrieval-only phase only

Builds (or reuses) a workspace of the shipped `corpus/` with `rag-app ingest` and
`rag-app index`, then starts the real chat server (`rag_app.ui.app.launch`, on loopback, its
own Gradio queue) in a child process and drives it with `--clients` concurrent
`gradio_client` clients, each with its own session and its own question from
`corpus/eval` (one whose expected source document is known from the qrels):

(a) LLM backend `none`: every client sends `--rounds` x (`/search` then `/ask`); answers are
    the retrieval-only passages. Each response must equal the one a single client got for
    the same question before the load (same hits in the same order, same answer text), so
    any cross-talk between sessions or any error fails the run.
(b) the embedded LLM (SmolLM2-135M, greedy, `--max-new-tokens`): `--llm-requests` `/ask`
    calls at once, two clients per question; the sources must equal phase (a)'s for that
    question and both clients of a question must get the same answer (greedy decoding),
    while each history holds only the client's own question.

The server's memory is read from the child's /proc/<pid>/status: VmRSS before the load and
VmHWM (peak resident set) after it. Prints a Markdown summary; `--json` writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from _common import REPO, percentile

RAG_APP = Path(sys.executable).with_name("rag-app")
MODES = ("hybrid", "dense", "bm25")


# --- the server, in a child process -------------------------------------------------------
def serve(workspace: str) -> None:
    """Child: start the chat server, print its URL, serve until stdin closes."""
    from rag_app.config import load_settings
    from rag_app.ui.app import free_port, launch

    settings = load_settings(workspace=workspace, corpus=str(REPO / "corpus"))
    settings = settings.model_copy(
        update={"server": settings.server.model_copy(update={"port": free_port()})}
    )
    demo, url = launch(settings, block=False)
    print(f"URL {url}", flush=True)
    sys.stdin.read()
    demo.close()


class Server:
    """The chat server in a child process, with its memory read from /proc."""

    def __init__(self, workspace: Path, env: dict[str, str]):
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", "--workspace", str(workspace)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **env},
        )
        for line in self.proc.stdout:
            if line.startswith("URL "):
                self.url = line.split()[1]
                break
        else:
            raise RuntimeError("the chat server did not start")

    def memory_mb(self) -> dict[str, float]:
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
        return fields

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- helpers ------------------------------------------------------------------------------
def text_of(message: dict) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return " ".join(part.get("text", "") for part in content)


def client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False)


def search(c, query: str, mode: str) -> list[tuple[str, str]]:
    """(chunk id, document) of each hit, in rank order."""
    hits = c.predict(query, "baseline", mode, False, api_name="/search")
    return [(h["id"], h["doc_id"]) for h in hits]


def ask(c, query: str, mode: str) -> tuple[list[str], str, str]:
    """(the user turns of the history, the answer, the sources markdown)."""
    chat, _, sources = c.predict(
        query, [], "baseline", mode, False, None, None, None, "", "", api_name="/ask"
    )
    users = [text_of(m) for m in chat if m["role"] == "user"]
    answer = text_of(chat[-1]) if chat and chat[-1]["role"] == "assistant" else ""
    return users, answer, sources


def pick_questions(url: str, n: int) -> list[dict]:
    """`n` eval questions whose hybrid top-1 document is a relevant one in the qrels."""
    eval_dir = REPO / "corpus" / "eval"
    queries = [json.loads(line) for line in (eval_dir / "queries.jsonl").read_text().splitlines()]
    relevant: dict[str, set[str]] = defaultdict(set)
    for line in (eval_dir / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        qid, doc, *_ = line.split("\t")
        relevant[qid].add(doc)
    c = client(url)
    picked: list[dict] = []
    seen_docs: set[str] = set()
    for q in queries:
        hits = c.predict(q["text"], "baseline", "hybrid", False, api_name="/search")
        top = hits[0]["doc_id"] if hits else None
        if top in relevant[q["_id"]] and top not in seen_docs:
            seen_docs.add(top)  # distinct expected documents: cross-talk would show
            picked.append({"id": q["_id"], "text": q["text"], "doc": top})
            if len(picked) == n:
                break
    if len(picked) < n:
        raise RuntimeError(f"only {len(picked)} eval questions retrieve their document first")
    return picked


def run_concurrently(url: str, jobs: list, work) -> tuple[list, float, list[str]]:
    """One client per job, all created before the clock starts; returns results, wall s."""
    clients = [client(url) for _ in jobs]
    barrier = threading.Barrier(len(jobs))
    errors: list[str] = []

    def go(i: int):
        barrier.wait()
        try:
            return work(clients[i], jobs[i])
        except Exception as exc:  # counted, reported
            errors.append(f"{type(exc).__name__}: {exc}")
            return None

    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        results = list(pool.map(go, range(len(jobs))))
    return results, time.perf_counter() - began, errors


def stats(latencies: list[float], wall: float) -> dict[str, float]:
    return {
        "requests": len(latencies),
        "wall_s": round(wall, 2),
        "req_per_s": round(len(latencies) / wall, 2),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p95_ms": round(percentile(latencies, 95) * 1000, 1),
        "max_ms": round(max(latencies) * 1000, 1),
    }


# --- phases -------------------------------------------------------------------------------
def phase_retrieval(ws: Path, n_clients: int, rounds: int) -> dict:
    server = Server(ws, {"RAG_APP_LLM__BACKEND": "none"})
    try:
        questions = pick_questions(server.url, n_clients)
        jobs = [(q, MODES[i % len(MODES)]) for i, q in enumerate(questions)]
        ref = client(server.url)  # what one client alone gets: the cross-talk reference
        expected = {
            (q["text"], m): (search(ref, q["text"], m), ask(ref, q["text"], m)) for q, m in jobs
        }
        before = server.memory_mb()

        def work(c, job):
            q, mode = job
            timings: dict[str, list[float]] = {"search": [], "ask": []}
            mismatches = 0
            want_ids, want_ask = expected[(q["text"], mode)]
            for _ in range(rounds):
                t0 = time.perf_counter()
                ids = search(c, q["text"], mode)
                timings["search"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                got = ask(c, q["text"], mode)
                timings["ask"].append(time.perf_counter() - t0)
                mismatches += (ids != want_ids) + (got != want_ask) + (got[0] != [q["text"]])
            return timings, mismatches

        results, wall, errors = run_concurrently(server.url, jobs, work)
        memory = server.memory_mb()
    finally:
        server.close()
    done = [r for r in results if r is not None]
    lat = {k: [t for r in done for t in r[0][k]] for k in ("search", "ask")}
    both = lat["search"] + lat["ask"]
    # The expected document ranks first in that client's own mode (the pick used hybrid).
    top_docs_ok = sum(1 for q, m in jobs if expected[(q["text"], m)][0][0][1] == q["doc"])
    return {
        "clients": n_clients,
        "rounds": rounds,
        "errors": errors,
        "mismatches": sum(r[1] for r in done),
        "expected_doc_first": f"{top_docs_ok}/{len(jobs)}",
        "all": stats(both, wall),
        "search": {k: v for k, v in stats(lat["search"], wall).items() if k != "req_per_s"},
        "ask": {k: v for k, v in stats(lat["ask"], wall).items() if k != "req_per_s"},
        "rss_before_mb": round(before["VmRSS"], 0),
        "peak_rss_mb": round(memory["VmHWM"], 0),
        "questions": [(q["id"], q["doc"], m) for q, m in jobs],
        "reference_sources": {f"{q['text']}\t{m}": expected[(q["text"], m)][1][2] for q, m in jobs},
    }


def phase_llm(ws: Path, requests: int, max_new_tokens: int, reference: dict | None) -> dict:
    env = {
        "RAG_APP_LLM__BACKEND": "embedded",
        "RAG_APP_LLM__MAX_NEW_TOKENS": str(max_new_tokens),
        "RAG_APP_LLM__TEMPERATURE": "0",
    }
    server = Server(ws, env)
    try:
        questions = pick_questions(server.url, max(1, requests // 2))
        warm = client(server.url)
        t0 = time.perf_counter()
        ask(warm, questions[0]["text"], "hybrid")  # loads the model: not timed below
        first = time.perf_counter() - t0
        before = server.memory_mb()
        jobs = [(questions[i % len(questions)], "hybrid") for i in range(requests)]

        def work(c, job):
            q, mode = job
            t0 = time.perf_counter()
            got = ask(c, q["text"], mode)
            return time.perf_counter() - t0, q, got

        results, wall, errors = run_concurrently(server.url, jobs, work)
        memory = server.memory_mb()
    finally:
        server.close()
    done = [r for r in results if r is not None]
    answers: dict[str, set[str]] = defaultdict(set)
    mismatches = 0
    fallback = 0
    for _, q, (users, answer, sources) in done:
        answers[q["text"]].add(answer)
        mismatches += users != [q["text"]]
        ref_sources = (reference or {}).get(f"{q['text']}\thybrid")
        mismatches += ref_sources is not None and sources != ref_sources
        fallback += "language model" in answer.lower() or "⚠" in answer
    mismatches += sum(len(a) - 1 for a in answers.values())  # greedy: one answer a question
    return {
        "requests": requests,
        "max_new_tokens": max_new_tokens,
        "errors": errors,
        "mismatches": mismatches,
        "fallback_answers": fallback,
        "first_answer_s": round(first, 1),
        "all": stats([r[0] for r in done], wall),
        "rss_before_mb": round(before["VmRSS"], 0),
        "peak_rss_mb": round(memory["VmHWM"], 0),
        "sample_answer": next(iter(next(iter(answers.values())))) if answers else "",
    }


def prepare(ws: Path) -> None:
    for cmd in (["ingest", str(REPO / "corpus")], ["index"]):
        subprocess.run([str(RAG_APP), *cmd, "-w", str(ws)], check=True, cwd=REPO)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", default=str(REPO / "workspace/bench-chat-load"))
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5, help="/search + /ask per client (a).")
    parser.add_argument("--llm-requests", type=int, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--skip-llm", action="store_true")
    parser.add_argument("--json", type=Path, help="Write the results here.")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.workspace)
        return

    ws = Path(args.workspace)
    prepare(ws)
    out: dict = {
        "date": datetime.now(UTC).date().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "load_average": os.getloadavg(),
    }
    out["retrieval"] = phase_retrieval(ws, args.clients, args.rounds)
    if not args.skip_llm:
        ref = out["retrieval"]["reference_sources"]
        out["llm"] = phase_llm(ws, args.llm_requests, args.max_new_tokens, ref)
    out["load_average_after"] = os.getloadavg()
    for phase in ("retrieval", "llm"):
        out.get(phase, {}).pop("reference_sources", None)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2, default=str), encoding="utf-8")

    r = out["retrieval"]
    print(f"\n{out['date']}, {out['machine']}, load average {out['load_average']}")
    print(
        "\n| phase | requests | errors | mismatches | req/s | p50 ms | p95 ms | server RSS before -> peak |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    a = r["all"]
    print(
        f"| (a) llm none, /search + /ask | {a['requests']} | {len(r['errors'])} | "
        f"{r['mismatches']} | {a['req_per_s']} | {a['p50_ms']} | {a['p95_ms']} | "
        f"{r['rss_before_mb']:.0f} -> {r['peak_rss_mb']:.0f} MB |"
    )
    for name in ("search", "ask"):
        s = r[name]
        print(f"| (a) {name} only | {s['requests']} | | | | {s['p50_ms']} | {s['p95_ms']} | |")
    if "llm" in out:
        m = out["llm"]
        b = m["all"]
        print(
            f"| (b) embedded LLM, /ask, {m['max_new_tokens']} tokens | {b['requests']} | "
            f"{len(m['errors'])} | {m['mismatches']} | {b['req_per_s']} | {b['p50_ms']} | "
            f"{b['p95_ms']} | {m['rss_before_mb']:.0f} -> {m['peak_rss_mb']:.0f} MB |"
        )
    for phase in ("retrieval", "llm"):
        for err in out.get(phase, {}).get("errors", [])[:5]:
            print(f"{phase} error: {err}")
    failed = any(
        out.get(p, {}).get("errors") or out.get(p, {}).get("mismatches")
        for p in ("retrieval", "llm")
    )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
