"""`llmproxy seed`: fill a database with a realistic synthetic request log, fast (binary COPY).

    llmproxy seed --rows 1000000 [--database-url URL] [--data-dir DIR] [--days 30] [--seed 7]

What it writes looks like a team's month of traffic through the gateway: two dozen clients with
their own model mixes, conversations (sessions) of one to twenty turns, thirty kinds of task
(the patterns pattern memory would find), office-hours peaks, growth over the period, rate-limit
bursts, upstream errors, streamed answers with time to first token, cached and reasoning tokens,
tool calls whose names were aliased for the provider, and bodies shaped like each provider's API.
Pattern memory's tables are filled to match (patterns, assignments, rollups, outcome signals,
feedback); real embeddings (from the local model) are stored for the newest ``--embed-sample``
exchanges only, so the seed stays minutes, not hours.

The database comes from --database-url, else $DATABASE_URL, else the stack running from
--data-dir, else an embedded Postgres started in --data-dir (left there for `llmproxy up`).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("seed", help="fill a database with a realistic synthetic request log (for demos and load tests)")
    p.add_argument("--rows", type=int, default=10_000, help="exchanges to write (default 10000)")
    p.add_argument("--database-url", help="target database (default: $DATABASE_URL, the running stack's, or embedded)")
    p.add_argument("--data-dir", type=Path, default=Path(".llmproxy"), help="where a running stack or embedded Postgres lives")
    p.add_argument("--days", type=float, default=30.0, help="the period the traffic spreads over, ending now (default 30)")
    p.add_argument("--seed", type=int, default=7, help="random seed (same seed, same data apart from ids)")
    p.add_argument(
        "--embed-sample",
        type=int,
        default=20_000,
        help="newest exchanges that get a stored embedding vector (default 20000; the rest are assigned only)",
    )
    p.add_argument("--no-model", action="store_true", help="synthetic vectors instead of the local embedding model")
    p.add_argument("--batch", type=int, default=50_000, help="rows per COPY (default 50000)")
    p.set_defaults(func=run)


# ---------------------------------------------------------------------------------------------
# what traffic is made of


@dataclass(frozen=True)
class TaskSpec:
    """One kind of request (what pattern memory would group), with how its traffic behaves."""

    label: str
    system: str
    prompts: tuple[str, ...]  # user turns, "{x}" filled from fillers
    fillers: tuple[str, ...]
    reply: str
    tools: tuple[str, ...] = ()
    input_median: int = 600
    output_median: int = 220
    length_rate: float = 0.005  # answers cut at max tokens
    bad_args_rate: float = 0.0  # tool calls with invalid arguments
    turns: float = 1.5  # mean turns of a conversation of this kind
    embeddings: bool = False


TASKS: tuple[TaskSpec, ...] = (
    TaskSpec(
        "support ticket summary",
        "You are a support triage assistant. Be concise.",
        (
            "Summarise this support ticket in three bullet points: {x}",
            "TL;DR of this customer ticket please: {x}",
            "Give me the gist of ticket: {x}",
        ),
        (
            "Customer cannot log in after resetting password, gets 'token expired' on the mobile app.",
            "Invoice #4411 was charged twice on the corporate card, needs refund before month end.",
            "Export to CSV times out for workspaces with more than 50k rows.",
            "SSO with Okta stopped working after the certificate rotation yesterday.",
            "Webhook deliveries are delayed by ~20 minutes since Tuesday.",
            "User reports dark mode resets every time the browser restarts.",
        ),
        "- {x0}\n- Impact: one customer blocked\n- Suggested owner: platform team",
        input_median=450,
        output_median=90,
    ),
    TaskSpec(
        "ticket priority classification",
        "Classify the ticket as P1, P2, P3 or P4. Answer with the label only.",
        ("Priority for: {x}", "Classify: {x}"),
        (
            "Production API returns 500 for all EU customers.",
            "Typo on the pricing page.",
            "Mobile app crashes when uploading a 4K video.",
            "Feature request: export dashboards as PDF.",
            "Payments failing intermittently for Visa cards.",
        ),
        "P2",
        input_median=180,
        output_median=3,
    ),
    TaskSpec(
        "customer reply draft",
        "You write friendly, accurate replies for the support team.",
        ("Draft a reply to this customer: {x}", "Write a polite answer explaining the fix for: {x}"),
        (
            "I was charged twice this month!",
            "Your export feature is broken again.",
            "How do I add a second admin to our account?",
            "Can we get an extension on the trial?",
            "The new UI is confusing, where did the reports go?",
        ),
        "Hi there,\n\nThanks for reaching out and sorry for the trouble. {x0} We've looked into it and ...\n\nBest,\nThe Support Team",
        output_median=260,
        turns=2.0,
    ),
    TaskSpec(
        "sql from question",
        "You translate questions into PostgreSQL for the analytics warehouse. Schema: orders(id, customer_id, total, created_at), customers(id, region, plan).",
        ("Write SQL: {x}", "Query for {x}", "SQL please - {x}"),
        (
            "revenue per region last quarter",
            "top 10 customers by order count this year",
            "monthly active customers on the enterprise plan",
            "average order value by plan in 2024",
            "customers with no orders in the last 90 days",
        ),
        "```sql\nSELECT c.region, sum(o.total) AS revenue\nFROM orders o JOIN customers c ON c.id = o.customer_id\nWHERE o.created_at >= date_trunc('quarter', now()) - interval '3 months'\nGROUP BY 1 ORDER BY 2 DESC;\n```",
        input_median=380,
        output_median=140,
        turns=1.8,
    ),
    TaskSpec(
        "code review",
        "You are a senior engineer reviewing a pull request. Point out bugs first.",
        ("Review this diff:\n{x}", "Any problems with this change?\n{x}"),
        (
            "- if user.is_admin:\n+ if user.is_admin or user.is_owner:",
            "+ cache = {}\n+ def get(k): return cache[k]",
            "- timeout=30\n+ timeout=None",
            '+ query = f"SELECT * FROM users WHERE id = {user_id}"',
            "+ for i in range(len(items)): items.remove(items[i])",
        ),
        "1. **Bug**: {x0} changes behaviour for ...\n2. Consider adding a test.\n3. Nit: naming.",
        input_median=1800,
        output_median=420,
        turns=2.5,
    ),
    TaskSpec(
        "stack trace explanation",
        "Explain errors to developers and propose a fix.",
        ("What does this error mean? {x}", "Help me fix: {x}"),
        (
            "TypeError: 'NoneType' object is not subscriptable at handlers.py:88",
            "psycopg2.OperationalError: could not connect to server: Connection refused",
            "java.lang.OutOfMemoryError: Java heap space",
            "panic: runtime error: index out of range [3] with length 3",
            "KeyError: 'user_id' in session middleware",
        ),
        "The error means {x0}. The most likely cause is ... Fix: check the value before indexing.",
        input_median=900,
        output_median=300,
        turns=2.2,
    ),
    TaskSpec(
        "unit test generation",
        "Write pytest tests. Cover edge cases.",
        ("Write tests for this function: {x}", "Generate unit tests: {x}"),
        (
            "def slugify(s): ...",
            "def parse_duration(text) -> timedelta: ...",
            "class RateLimiter: ...",
            "def merge_intervals(xs): ...",
            "def normalize_email(e): ...",
        ),
        "```python\nimport pytest\n\ndef test_basic():\n    assert ...\n\n@pytest.mark.parametrize(...)\ndef test_edges(...):\n    ...\n```",
        input_median=700,
        output_median=650,
        length_rate=0.03,
    ),
    TaskSpec(
        "invoice field extraction",
        "Extract invoice fields and call erp.create_invoice with them.",
        ("Extract the fields from this invoice: {x}", "Book this invoice: {x}"),
        (
            "ACME GmbH, INV-2291, 2025-03-02, EUR 1,240.00, VAT 19%",
            "Globex Corp invoice 7781 dated March 3rd, total $980",
            "Initech Ltd / #A-118 / 14.02.2025 / 312,50 EUR",
            "Umbrella Inc. Invoice 55-A, net 30, USD 12,000",
        ),
        "",
        tools=("erp.create_invoice", "erp.lookup_vendor"),
        input_median=520,
        output_median=80,
        bad_args_rate=0.06,
    ),
    TaskSpec(
        "translation",
        "Translate faithfully. Keep product names in English.",
        (
            "Translate to {x}: Our new dashboard makes reporting effortless.",
            "Please translate into {x}: Free shipping on orders over $50.",
        ),
        ("German", "French", "Japanese", "Spanish", "Brazilian Portuguese", "Italian"),
        "Unser neues Dashboard macht Berichte mühelos.",
        input_median=120,
        output_median=60,
    ),
    TaskSpec(
        "meeting action items",
        "Turn meeting notes into action items with owners and dates.",
        ("Action items from these notes: {x}", "Who does what after this meeting? {x}"),
        (
            "Q3 planning: Anna to finalise budget, Tom migrates billing by Aug 15.",
            "Incident review: add alerting on queue depth, runbook update owed by SRE.",
            "Design sync: new onboarding flow, copy review pending with marketing.",
        ),
        "- [ ] Anna: finalise budget (Fri)\n- [ ] Tom: billing migration (Aug 15)",
        input_median=1400,
        output_median=160,
    ),
    TaskSpec(
        "github issue agent",
        "You are a coding agent. Use the tools to find and triage issues.",
        ("Find open issues about {x} and summarise them", "Is there already an issue for {x}?"),
        (
            "flaky integration tests",
            "memory leak in the worker",
            "login redirect loop",
            "slow dashboard queries",
            "broken docs links",
        ),
        "",
        tools=("github.search_issues", "github.get_issue", "github.add_label"),
        input_median=2600,
        output_median=120,
        turns=6.0,
        bad_args_rate=0.01,
    ),
    TaskSpec(
        "filesystem coding agent",
        "You are an autonomous coding agent with file tools.",
        ("Refactor {x} and run the tests", "Fix the failing test in {x}"),
        ("src/billing/invoice.py", "app/models/user.ts", "pkg/queue/consumer.go", "lib/cache.rb", "services/auth/token.py"),
        "",
        tools=("mcp:filesystem/read_file", "mcp:filesystem/write_file", "mcp:shell/run tests"),
        input_median=5200,
        output_median=380,
        turns=9.0,
        bad_args_rate=0.02,
    ),
    TaskSpec(
        "rag answer with context",
        "Answer only from the provided context. Cite the document ids.",
        ("Context: [doc-12] ... [doc-40] ...\n\nQuestion: {x}", "Using the attached handbook excerpts, {x}"),
        (
            "what is our parental leave policy?",
            "how do I request a new laptop?",
            "what are the on-call rotation rules?",
            "can contractors access production?",
            "how are expenses approved?",
        ),
        "According to [doc-12], {x0} ... (see also [doc-40]).",
        input_median=6500,
        output_median=220,
        turns=1.6,
    ),
    TaskSpec(
        "marketing copy",
        "You are a senior copywriter for a B2B SaaS brand. Confident, no buzzwords.",
        ("Write a landing page hero for {x}", "Three taglines for {x}"),
        ("our new analytics add-on", "the spring sale", "the mobile app launch", "the enterprise plan"),
        "Know your numbers before your standup.\nAnalytics that answer the question you were about to ask.",
        input_median=160,
        output_median=180,
    ),
    TaskSpec(
        "regex help",
        "Help with regular expressions. Explain briefly.",
        ("Regex that matches {x}", "How do I match {x} with a regex?"),
        ("ISO dates", "UK postcodes", "semantic version strings", "hex colours", "email addresses (roughly)"),
        "`^\\d{4}-\\d{2}-\\d{2}$` matches {x0}.",
        input_median=90,
        output_median=120,
    ),
    TaskSpec(
        "commit message",
        "Write a conventional commit message for the diff.",
        ("Commit message for: {x}",),
        (
            "+ retry with backoff on 429",
            "- remove legacy v1 endpoints",
            "+ add index on orders(created_at)",
            "~ bump dependencies",
        ),
        "feat(api): retry with exponential backoff on 429",
        input_median=600,
        output_median=30,
    ),
    TaskSpec(
        "email subject lines",
        "Suggest email subject lines. Max 60 characters.",
        ("Subject lines for {x}",),
        ("the product newsletter", "a renewal reminder", "a webinar invitation"),
        "1. Your June product update\n2. Three things we shipped for you",
        input_median=110,
        output_median=50,
    ),
    TaskSpec(
        "review sentiment",
        "Label sentiment as positive, neutral or negative and give one reason.",
        ("Sentiment: {x}",),
        (
            "Love the new export!",
            "Support took three days to answer.",
            "It works.",
            "Pricing is confusing but the product is great.",
        ),
        "negative - slow support response",
        input_median=70,
        output_median=12,
    ),
    TaskSpec(
        "rewrite for clarity",
        "Rewrite the text to be clearer and shorter. Keep the meaning.",
        ("Make this clearer: {x}", "Rewrite: {x}"),
        (
            "In order to facilitate the process of onboarding, it is recommended that users ...",
            "Due to the fact that the system is currently undergoing maintenance ...",
            "We would like to take this opportunity to inform you that ...",
        ),
        "To onboard faster, users should ...",
        input_median=240,
        output_median=90,
    ),
    TaskSpec(
        "document embedding",
        "",
        ("{x}",),
        (
            "Quarterly security review checklist",
            "Onboarding guide for new engineers",
            "Incident postmortem 2025-02-11",
            "API rate limits and quotas",
            "Data retention policy",
        ),
        "",
        input_median=380,
        output_median=0,
        embeddings=True,
    ),
    TaskSpec(
        "long report summary",
        "Summarise long reports for executives. Use headings.",
        ("Summarise this 40-page report: {x}", "Executive summary of: {x}"),
        ("annual customer survey results", "EU expansion feasibility study", "security audit findings", "board pack for Q2"),
        "## Key findings\n1. ...\n## Risks\n...\n## Recommendations\n...",
        input_median=14000,
        output_median=1400,
        length_rate=0.14,
    ),
    TaskSpec(
        "kubernetes troubleshooting",
        "You are an SRE. Diagnose Kubernetes problems step by step.",
        ("My pod is stuck in {x}, what should I check?", "Why would a deployment show {x}?"),
        ("CrashLoopBackOff", "ImagePullBackOff", "Pending", "OOMKilled", "Evicted"),
        "Check `kubectl describe pod` events first: {x0} usually means ...",
        input_median=300,
        output_median=350,
        turns=2.4,
    ),
    TaskSpec(
        "pandas data question",
        "Answer data analysis questions with pandas code.",
        ("In pandas, how do I {x}?",),
        (
            "pivot a long table to wide",
            "compute a 7-day rolling mean per group",
            "merge on nearest timestamp",
            "drop duplicate rows keeping the latest",
        ),
        "```python\ndf.pivot_table(index=..., columns=..., values=...)\n```",
        input_median=200,
        output_median=240,
    ),
    TaskSpec(
        "contract clause review",
        "You are a contracts analyst. Flag risky clauses; this is not legal advice.",
        ("Review this clause: {x}", "Is this clause risky for us? {x}"),
        (
            "Unlimited liability for data breaches.",
            "Auto-renewal for 36 months with 12 months notice.",
            "Vendor may change fees with 7 days notice.",
            "Exclusive jurisdiction in a foreign court.",
        ),
        "Risk: high. {x0} exposes the company to ... Suggested redline: ...",
        input_median=900,
        output_median=300,
    ),
    TaskSpec(
        "calendar scheduling agent",
        "You schedule meetings with the calendar tools.",
        ("Find a slot for {x}", "Book {x}"),
        (
            "a 30 minute sync with the design team next week",
            "the quarterly review with finance",
            "an interview loop for the backend candidate",
        ),
        "",
        tools=("calendar.find_slots", "calendar.create_event"),
        input_median=800,
        output_median=60,
        turns=3.0,
        bad_args_rate=0.03,
    ),
    TaskSpec(
        "travel planning agent",
        "Plan business travel within policy using the travel tools.",
        ("Plan a trip to {x}", "Flights and hotel for {x}"),
        ("Berlin for the conference on the 12th", "New York next Tuesday to Thursday", "Tokyo in October"),
        "",
        tools=("travel/search flights", "travel/search hotels", "policy check"),
        input_median=1100,
        output_median=90,
        turns=4.0,
    ),
    TaskSpec(
        "general chat",
        "You are a helpful assistant.",
        ("{x}",),
        ("hi!", "what can you do?", "tell me a joke about databases", "thanks, that helped", "what's a good name for a cat?"),
        "Hello! I can help with writing, analysis, code and more.",
        input_median=60,
        output_median=80,
        turns=2.0,
    ),
    TaskSpec(
        "math word problem",
        "Solve step by step and give the final answer.",
        ("{x}",),
        (
            "A train leaves at 3pm at 80 km/h; another at 4pm at 100 km/h. When does the second catch up?",
            "What is the probability of two sixes in three dice rolls?",
            "If a price rises 20% then falls 20%, what is the net change?",
        ),
        "The second train catches up at 8pm.",
        input_median=120,
        output_median=900,
    ),
    TaskSpec(
        "product categorisation",
        "Map products to the taxonomy. Answer with the category path.",
        ("Category for: {x}",),
        (
            "USB-C docking station with 3 monitors",
            "organic green tea 100 bags",
            "kids' waterproof hiking boots",
            "4K action camera",
        ),
        "Electronics > Computer Accessories > Docking Stations",
        input_median=150,
        output_median=15,
    ),
    TaskSpec(
        "title generation",
        "Write a short title (max 6 words) for the conversation.",
        ("Title for this conversation: {x}",),
        ("debugging a flaky test", "planning the offsite", "sql for churn"),
        "Debugging Flaky CI Tests",
        input_median=400,
        output_median=8,
    ),
)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    provider: str
    api: str  # chat | responses | messages | embeddings
    ttft_ms: float  # median time to first token
    tokens_per_s: float
    error_rate: float = 0.004  # 5xx share
    reasoning: bool = False
    caches: bool = True


MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("gpt-4o-mini", "openai", "chat", 320, 95),
    ModelSpec("gpt-4o", "openai", "chat", 450, 70),
    ModelSpec("gpt-4.1", "openai", "responses", 520, 75),
    ModelSpec("gpt-4.1-mini", "openai", "chat", 350, 110),
    ModelSpec("o4-mini", "openai", "chat", 2600, 140, reasoning=True),
    ModelSpec("o3", "openai", "responses", 5200, 90, reasoning=True, error_rate=0.008),
    ModelSpec("text-embedding-3-small", "openai", "embeddings", 0, 0, error_rate=0.001, caches=False),
    ModelSpec("claude-sonnet-4-5", "anthropic", "messages", 700, 65, error_rate=0.006),
    ModelSpec("claude-haiku-4-5", "anthropic", "messages", 380, 120),
    ModelSpec("claude-opus-4-1", "anthropic", "messages", 1300, 38, error_rate=0.01),
    ModelSpec("meta-llama/llama-3.3-70b-instruct", "openrouter", "chat", 600, 55, error_rate=0.015, caches=False),
    ModelSpec("google/gemini-2.5-flash", "openrouter", "chat", 420, 160, error_rate=0.01, caches=False),
)
_MODEL_INDEX = {m.name: i for i, m in enumerate(MODELS)}

_API_PATH = {
    "chat": "/v1/chat/completions",
    "responses": "/v1/responses",
    "messages": "/v1/messages",
    "embeddings": "/v1/embeddings",
}
_SDK = {"openai": "OpenAI/Python 1.99.2", "anthropic": "Anthropic/Python 0.64.0", "openrouter": "OpenAI/JS 5.12.0"}


@dataclass(frozen=True)
class ClientSpec:
    fingerprint: str | None
    addr: str
    weight: float
    models: dict[str, float]  # model -> share
    stream_share: float
    tasks: tuple[int, ...]  # indices into TASKS this client runs


def make_clients(rng: np.random.Generator, n: int = 24) -> list[ClientSpec]:
    mixes = [
        {"gpt-4o-mini": 0.6, "gpt-4o": 0.3, "text-embedding-3-small": 0.1},
        {"claude-sonnet-4-5": 0.7, "claude-haiku-4-5": 0.3},
        {"gpt-4.1": 0.5, "o4-mini": 0.3, "gpt-4.1-mini": 0.2},
        {"claude-sonnet-4-5": 0.5, "claude-opus-4-1": 0.2, "gpt-4o": 0.3},
        {"meta-llama/llama-3.3-70b-instruct": 0.5, "google/gemini-2.5-flash": 0.5},
        {"o3": 0.4, "gpt-4.1": 0.6},
        {"gpt-4o-mini": 0.8, "claude-haiku-4-5": 0.2},
        {"text-embedding-3-small": 0.85, "gpt-4o-mini": 0.15},
    ]
    agent_tasks = tuple(i for i, t in enumerate(TASKS) if t.tools)
    clients = []
    weights = 1.0 / np.arange(1, n + 1) ** 0.9  # a few busy services, a long tail of small ones
    for i in range(n):
        fp = None if i % 11 == 10 else hashlib.sha256(f"client-key-{i}".encode()).hexdigest()[:16]
        k = int(rng.integers(5, 12))
        tasks = tuple(sorted(set(rng.choice(len(TASKS), size=k, replace=False).tolist())))
        if i % 4 == 1:  # agent-heavy services
            tasks = tuple(sorted(set(tasks) | set(agent_tasks[: 2 + i % 3])))
        clients.append(
            ClientSpec(
                fingerprint=fp,
                addr=f"10.20.{i // 8}.{10 + i}",
                weight=float(weights[i]),
                models=mixes[i % len(mixes)],
                stream_share=float(rng.uniform(0.2, 0.9)),
                tasks=tasks,
            )
        )
    return clients


def task_texts() -> list[list[str]]:
    """Every distinct user text of each task (prompt variant x filler)."""
    return [[p.replace("{x}", f) for p in t.prompts for f in t.fillers] for t in TASKS]


# ---------------------------------------------------------------------------------------------
# the traffic plan (vectorised): when, who, what


@dataclass
class Plan:
    started: np.ndarray  # float seconds since epoch
    client: np.ndarray  # index into clients
    session: np.ndarray  # session number
    turn: np.ndarray  # 0-based turn within the session
    task: np.ndarray
    text: np.ndarray  # index into task_texts()[task]
    model: np.ndarray
    streamed: np.ndarray
    status: np.ndarray  # 0 = no status (transport error)
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    cached_tokens: np.ndarray
    reasoning_tokens: np.ndarray
    ttft_ms: np.ndarray
    latency_ms: np.ndarray
    overhead_ms: np.ndarray  # the gateway's share of the latency
    finish_length: np.ndarray  # bool: cut at max tokens
    bad_args: np.ndarray  # bool
    feedback: np.ndarray  # 0 none, 1 up, -1 down


def _hour_weights(start: float, hours: int) -> np.ndarray:
    """Relative traffic per hour: office hours, quieter weekends, growth over the period."""
    t = start + 3600.0 * np.arange(hours)
    dt = t.astype("datetime64[s]")
    hour = (dt.astype("datetime64[h]").astype(np.int64)) % 24
    weekday = ((dt.astype("datetime64[D]").astype(np.int64)) + 3) % 7  # 0 = Monday
    diurnal = 0.25 + np.exp(-((hour - 14.0) ** 2) / (2 * 3.2**2))  # peak early afternoon UTC
    weekend = np.where(weekday >= 5, 0.35, 1.0)
    growth = np.linspace(0.7, 1.3, hours)
    return diurnal * weekend * growth


def plan_traffic(
    rows: int, days: float, rng: np.random.Generator, clients: Sequence[ClientSpec], now: float | None = None
) -> Plan:
    now = time.time() if now is None else now
    hours = max(1, int(days * 24))
    start = (now // 3600) * 3600 - 3600 * (hours - 1)
    w = _hour_weights(start, hours)
    cw = np.array([c.weight for c in clients])
    cw /= cw.sum()

    # sessions: a client, a task, a length; their turns follow each other by seconds to minutes
    mean_turns = float(np.mean([t.turns for t in TASKS]))
    n_sessions = max(1, int(rows / mean_turns * 1.1))
    s_client = rng.choice(len(clients), size=n_sessions, p=cw)
    s_task = np.empty(n_sessions, dtype=np.int64)
    s_model = np.empty(n_sessions, dtype=np.int64)
    for ci, c in enumerate(clients):
        idx = np.flatnonzero(s_client == ci)
        if idx.size == 0:
            continue
        tw = 1.0 / np.arange(1, len(c.tasks) + 1)  # each client has favourite tasks
        s_task[idx] = np.asarray(c.tasks)[rng.choice(len(c.tasks), size=idx.size, p=tw / tw.sum())]
        names = list(c.models)
        mw = np.array([c.models[n] for n in names])
        s_model[idx] = np.array([_MODEL_INDEX[n] for n in names])[rng.choice(len(names), size=idx.size, p=mw / mw.sum())]
    # embedding tasks go to embedding models and vice versa
    emb_model = _MODEL_INDEX["text-embedding-3-small"]
    emb_task = np.array([t.embeddings for t in TASKS])
    s_model = np.where(emb_task[s_task], emb_model, np.where(s_model == emb_model, _MODEL_INDEX["gpt-4o-mini"], s_model))
    task_turns = np.array([t.turns for t in TASKS])
    s_len = np.minimum(1 + rng.geometric(1.0 / task_turns[s_task]) - 1, 25)
    s_len = np.maximum(s_len, 1)
    total = int(s_len.sum())
    while total < rows:  # top up with single-turn sessions
        extra = rows - total
        s_client = np.concatenate([s_client, rng.choice(len(clients), size=extra, p=cw)])
        s_task = np.concatenate([s_task, s_task[rng.integers(0, n_sessions, size=extra)]])
        s_model = np.concatenate([s_model, s_model[rng.integers(0, n_sessions, size=extra)]])
        s_len = np.concatenate([s_len, np.ones(extra, dtype=s_len.dtype)])
        n_sessions += extra
        total = int(s_len.sum())
    s_start = start + 3600.0 * rng.choice(hours, size=n_sessions, p=w / w.sum()) + rng.uniform(0, 3600, size=n_sessions)

    session = np.repeat(np.arange(n_sessions), s_len)[:rows]
    first = np.concatenate([[0], np.cumsum(s_len)[:-1]])
    turn = (np.arange(int(s_len.sum())) - np.repeat(first, s_len))[:rows]
    gaps = rng.lognormal(np.log(25.0), 0.9, size=rows)  # seconds between a reply and the next turn
    gaps[turn == 0] = 0.0
    offsets = _cumsum_within(gaps, session)
    started = np.minimum(s_start[session] + offsets, now - rng.uniform(1, 60, size=rows))

    task = s_task[session]
    model = s_model[session]
    client = s_client[session]
    texts_per_task = np.array([len(t) for t in task_texts()])
    text = (rng.random(rows) * texts_per_task[task]).astype(np.int64)

    m_ttft = np.array([m.ttft_ms for m in MODELS])
    m_tps = np.array([m.tokens_per_s for m in MODELS])
    m_err = np.array([m.error_rate for m in MODELS])
    m_reason = np.array([m.reasoning for m in MODELS])
    m_caches = np.array([m.caches for m in MODELS])
    is_emb = np.array([m.api == "embeddings" for m in MODELS])[model]

    in_med = np.array([t.input_median for t in TASKS])[task]
    out_med = np.array([t.output_median for t in TASKS])[task]
    input_tokens = np.round(rng.lognormal(np.log(in_med), 0.45) * (1 + 0.35 * turn)).astype(np.int64)
    output_tokens = np.round(rng.lognormal(np.log(np.maximum(out_med, 1)), 0.6)).astype(np.int64)
    output_tokens[is_emb] = 0
    reasoning = np.where(m_reason[model], np.round(output_tokens * rng.uniform(0.3, 0.8, size=rows) * 3), 0).astype(np.int64)
    output_tokens = output_tokens + reasoning  # reasoning is part of the output count (OpenAI convention)
    cached = np.where(
        m_caches[model] & (turn > 0) & (input_tokens >= 1024), np.round(input_tokens * rng.uniform(0.5, 0.9, size=rows)), 0
    ).astype(np.int64)

    stream_share = np.array([c.stream_share for c in clients])[client]
    streamed = (rng.random(rows) < stream_share) & ~is_emb
    ttft = rng.lognormal(np.log(np.maximum(m_ttft[model], 1.0)), 0.35) * (1 + input_tokens / 60000)
    gen_ms = 1000.0 * output_tokens / np.maximum(m_tps[model], 1.0)
    latency = np.where(is_emb, rng.lognormal(np.log(90), 0.4, size=rows), ttft + gen_ms)

    # outcomes: rate-limit bursts (some hours of some clients), upstream 5xx, client mistakes, transport errors
    hour_of = ((started - start) // 3600).astype(np.int64)
    burst_hours = rng.random(hours) < 0.03
    r = rng.random(rows)
    status = np.full(rows, 200, dtype=np.int64)
    status[(burst_hours[np.clip(hour_of, 0, hours - 1)]) & (r < 0.25)] = 429
    server = (status == 200) & (r > 1 - m_err[model])
    status[server] = rng.choice([500, 502, 503, 529], size=int(server.sum()))
    status[(status == 200) & (r > 0.25) & (r < 0.2535)] = 400
    transport = (status == 200) & (r > 0.3) & (r < 0.3008)
    status[transport] = 0
    failed = status != 200
    latency = np.where(failed, rng.lognormal(np.log(180), 0.6, size=rows), latency)
    output_tokens = np.where(failed, 0, output_tokens)
    reasoning = np.where(failed, 0, reasoning)
    cached = np.where(status == 400, 0, cached)
    input_tokens = np.where((status == 0) | (status >= 500) | (status == 429), 0, input_tokens)
    cached = np.minimum(cached, input_tokens)

    length_rate = np.array([t.length_rate for t in TASKS])[task]
    finish_length = ~failed & (rng.random(rows) < length_rate)
    bad_rate = np.array([t.bad_args_rate for t in TASKS])[task]
    bad_args = ~failed & (rng.random(rows) < bad_rate)
    fb = rng.random(rows)
    feedback = np.where(fb < 0.004, 1, np.where(fb < 0.006, -1, 0))
    feedback[failed | finish_length] = np.where(fb[failed | finish_length] < 0.05, -1, 0)

    return Plan(
        started=started,
        client=client,
        session=session,
        turn=turn,
        task=task,
        text=text,
        model=model,
        streamed=streamed,
        status=status,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_tokens=cached,
        reasoning_tokens=reasoning,
        ttft_ms=np.where(streamed & ~failed, ttft, np.nan),
        latency_ms=latency,
        overhead_ms=rng.uniform(0.6, 2.5, size=rows),
        finish_length=finish_length,
        bad_args=bad_args,
        feedback=feedback,
    )


def _cumsum_within(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Running sum of ``values`` restarting at each new (consecutive) group."""
    total = np.cumsum(values)
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    base = np.repeat(total[starts] - values[starts], np.diff(np.r_[starts, len(values)]))
    return total - base


# ---------------------------------------------------------------------------------------------
# rows


_ERRORS = {
    400: ("invalid_request_error", "Invalid value for 'temperature': must be between 0 and 2."),
    429: ("rate_limit_error", "Rate limit reached for requests per minute. Please try again in 2s."),
    500: ("server_error", "The server had an error while processing your request."),
    502: ("bad_gateway", "Bad gateway."),
    503: ("overloaded", "The engine is currently overloaded, please try again later."),
    529: ("overloaded_error", "Overloaded"),
}


def _body(document: Any) -> str:
    inner = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    return f'{{"json":{inner},"text":null,"size":{len(inner.encode())},"truncated":false}}'


@dataclass
class RowMaker:
    """Turns one planned exchange into the ``exchanges`` row (bodies shaped like the provider's API)."""

    clients: Sequence[ClientSpec]
    run_id: str
    texts: list[list[str]] = field(default_factory=task_texts)
    _codecs: dict[int, tuple[dict[str, str], dict[str, str]]] = field(default_factory=dict)

    def aliases(self, task: int) -> tuple[dict[str, str], dict[str, str]]:
        """(original -> upstream name, alias -> original for the renamed ones) of a task's tools."""
        if task not in self._codecs:
            from extproc.toolnames import ToolNameCodec

            codec = ToolNameCodec(TASKS[task].tools)
            self._codecs[task] = ({n: codec.encode(n) for n in TASKS[task].tools}, dict(codec.mapping))
        return self._codecs[task]

    def request_id(self, i: int) -> str:
        return f"seed-{self.run_id}-{i:08d}"

    def session_id(self, s: int) -> str:
        return f"sess-{self.run_id}-{s:07d}"

    def row(self, i: int, p: Plan, j: int) -> tuple:
        t = TASKS[p.task[j]]
        m = MODELS[p.model[j]]
        c = self.clients[p.client[j]]
        text = self.texts[p.task[j]][p.text[j]]
        filler = t.fillers[p.text[j] % len(t.fillers)]
        status = int(p.status[j])
        streamed = bool(p.streamed[j])
        started = datetime.fromtimestamp(float(p.started[j]), tz=UTC)
        latency = float(p.latency_ms[j])
        finished = started + timedelta(milliseconds=latency)
        inp, out = int(p.input_tokens[j]), int(p.output_tokens[j])
        cached, reasoning = int(p.cached_tokens[j]), int(p.reasoning_tokens[j])
        forward, alias_map = self.aliases(int(p.task[j]))
        ok = status == 200
        finish = None
        if ok:
            finish = "length" if p.finish_length[j] else ("tool_calls" if t.tools else "stop")
            if m.api == "messages":
                finish = {"length": "max_tokens", "tool_calls": "tool_use", "stop": "end_turn"}[finish]
            if m.api == "responses":
                finish = "max_output_tokens" if finish == "length" else "completed"
            if m.api == "embeddings":
                finish = None
        reply = t.reply.replace("{x0}", filler) if t.reply else ""
        req_client, req_fwd = self._requests(m, t, text, streamed, forward)
        usage_doc = self._usage_doc(m, inp, out, cached, reasoning)
        response_text: str | None = None
        tool_calls: str | None = None
        if ok:
            resp_up = self._response(m, t, reply, finish, usage_doc, forward, bool(p.bad_args[j]), upstream=True, rid=i)
            resp_cl = self._response(m, t, reply, finish, usage_doc, forward, bool(p.bad_args[j]), upstream=False, rid=i)
            response_text, tool_calls = self._summary(m, t, reply, forward, bool(p.bad_args[j]))
        elif status:
            kind, message = _ERRORS.get(status, ("error", "error"))
            doc = {"error": {"type": kind, "message": message}}
            resp_up = resp_cl = _body(doc)
        else:
            resp_up = resp_cl = None
        error = None
        if status == 0:
            error = "upstream connect error or disconnect/reset before headers. reset reason: connection timeout"
        elif status >= 400:
            error = f"upstream {status}"
        usage = {
            "input_tokens": inp if ok or inp else None,
            "output_tokens": out if ok else None,
            "total_tokens": (inp + out) if ok else None,
            "cached_tokens": cached if cached else None,
            "reasoning_tokens": reasoning if reasoning else None,
        }
        prefix = m.provider if (i % 3) else ""
        path = (f"/{prefix}" if prefix else "") + _API_PATH[m.api]
        headers = {
            "content-type": "application/json",
            "user-agent": _SDK[m.provider],
            "x-session-id": self.session_id(int(p.session[j])),
        }
        upstream_ms = max(latency - float(p.overhead_ms[j]), 0.0)
        return (
            self.request_id(i),
            self.session_id(int(p.session[j])),
            c.fingerprint,
            c.addr,
            started,
            finished,
            "POST",
            path,
            m.provider,
            m.name,
            m.api,
            "prefix" if prefix else "unified",
            status or None,
            streamed,
            latency,
            None if np.isnan(p.ttft_ms[j]) else float(p.ttft_ms[j]),
            upstream_ms if status else None,
            usage["input_tokens"],
            usage["output_tokens"],
            usage["total_tokens"],
            usage["cached_tokens"],
            usage["reasoning_tokens"],
            json.dumps(usage),
            req_client,
            req_fwd,
            resp_up,
            resp_cl,
            list(t.tools),
            t.system or None,
            text,
            int(bool(p.bad_args[j])),
            json.dumps(alias_map),
            finish,
            error,
            json.dumps(headers),
            "{}",
            response_text,
            tool_calls,
        )

    @staticmethod
    def _summary(m: ModelSpec, t: TaskSpec, reply: str, forward: dict[str, str], bad_args: bool) -> tuple[str | None, str | None]:
        """The provider-neutral summary the sidecar records (ExchangeRecord.response_text / tool_calls)."""
        if m.api == "embeddings":
            return None, None
        calls = []
        for name in t.tools[:1] if t.tools else ():
            if m.api == "messages":  # Anthropic sends an input object: always valid JSON
                args = json.dumps({"query": "label:bug state:open"})
            else:
                args = '{"query": "label:bug state:open", "limit": 10' + ("" if bad_args else "}")
            calls.append({"name": name, "upstream_name": forward[name], "arguments": args})
        return (reply or None), json.dumps(calls)

    def _requests(self, m: ModelSpec, t: TaskSpec, text: str, streamed: bool, forward: dict[str, str]) -> tuple[str, str]:
        def doc(upstream: bool) -> dict[str, Any]:
            names = [forward[n] if upstream else n for n in t.tools]
            if m.api == "embeddings":
                return {"model": m.name, "input": [text]}
            if m.api == "messages":
                d: dict[str, Any] = {
                    "model": m.name,
                    "max_tokens": 2048,
                    "system": t.system,
                    "messages": [{"role": "user", "content": text}],
                }
                if names:
                    d["tools"] = [{"name": n, "input_schema": {"type": "object"}} for n in names]
            elif m.api == "responses":
                d = {"model": m.name, "instructions": t.system, "input": text}
                if names:
                    d["tools"] = [{"type": "function", "name": n, "parameters": {"type": "object"}} for n in names]
            else:
                d = {"model": m.name, "messages": [{"role": "system", "content": t.system}, {"role": "user", "content": text}]}
                if names:
                    d["tools"] = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for n in names]
            if streamed:
                d["stream"] = True
            return d

        client = _body(doc(upstream=False))
        return client, (_body(doc(upstream=True)) if t.tools else client)

    @staticmethod
    def _usage_doc(m: ModelSpec, inp: int, out: int, cached: int, reasoning: int) -> dict[str, Any]:
        if m.api == "messages":
            return {"input_tokens": inp, "output_tokens": out, "cache_read_input_tokens": cached}
        if m.api == "responses":
            return {
                "input_tokens": inp,
                "output_tokens": out,
                "total_tokens": inp + out,
                "input_tokens_details": {"cached_tokens": cached},
                "output_tokens_details": {"reasoning_tokens": reasoning},
            }
        if m.api == "embeddings":
            return {"prompt_tokens": inp, "total_tokens": inp}
        return {
            "prompt_tokens": inp,
            "completion_tokens": out,
            "total_tokens": inp + out,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        }

    def _response(
        self,
        m: ModelSpec,
        t: TaskSpec,
        reply: str,
        finish: str | None,
        usage: dict[str, Any],
        forward: dict[str, str],
        bad_args: bool,
        *,
        upstream: bool,
        rid: int,
    ) -> str:
        calls = []
        for k, name in enumerate(t.tools[:1] if t.tools else ()):
            args = '{"query": "label:bug state:open", "limit": 10' + ("" if bad_args else "}")
            calls.append((f"call_{rid:x}{k}", forward[name] if upstream else name, args))
        if m.api == "embeddings":
            return _body(
                {
                    "object": "list",
                    "model": m.name,
                    "data": [{"object": "embedding", "index": 0, "embedding": "(1536 floats)"}],
                    "usage": usage,
                }
            )
        if m.api == "messages":
            content: list[dict[str, Any]] = [{"type": "text", "text": reply}] if reply else []
            content += [
                {"type": "tool_use", "id": cid, "name": n, "input": {"query": "label:bug state:open"}} for cid, n, _ in calls
            ]
            return _body(
                {
                    "id": f"msg_{rid:x}",
                    "type": "message",
                    "role": "assistant",
                    "model": m.name,
                    "content": content,
                    "stop_reason": finish,
                    "usage": usage,
                }
            )
        if m.api == "responses":
            output: list[dict[str, Any]] = []
            if reply:
                output.append({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": reply}]})
            output += [{"type": "function_call", "call_id": cid, "name": n, "arguments": a} for cid, n, a in calls]
            return _body(
                {"id": f"resp_{rid:x}", "object": "response", "model": m.name, "status": finish, "output": output, "usage": usage}
            )
        message: dict[str, Any] = {"role": "assistant", "content": reply or None}
        if calls:
            message["tool_calls"] = [
                {"id": cid, "type": "function", "function": {"name": n, "arguments": a}} for cid, n, a in calls
            ]
        return _body(
            {
                "id": f"chatcmpl-{rid:x}",
                "object": "chat.completion",
                "model": m.name,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": usage,
            }
        )


EXCHANGE_COLUMNS = (
    "request_id",
    "session_id",
    "client_key_fp",
    "client_addr",
    "started_at",
    "finished_at",
    "method",
    "path",
    "provider",
    "model",
    "api",
    "route",
    "status",
    "streamed",
    "latency_ms",
    "ttft_ms",
    "upstream_ms",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "usage",
    "request_client",
    "request_forwarded",
    "response_upstream",
    "response_client",
    "tool_names",
    "prompt_system",
    "prompt_user",
    "tool_args_invalid",
    "tool_aliases",
    "finish_reason",
    "error",
    "request_headers",
    "flags",
    "response_text",
    "tool_calls",
)


# ---------------------------------------------------------------------------------------------
# embeddings and pattern memory


def text_vectors(use_model: bool, rng: np.random.Generator, dim: int) -> tuple[list[np.ndarray], str]:
    """A unit vector per distinct text of each task: the real model's, or task centroid + noise."""
    texts = task_texts()
    if use_model:
        try:
            from intelligence.embeddings import shared_embedder

            embedder = shared_embedder()
            if embedder.dim == dim:
                return [embedder.encode(tt) for tt in texts], "all-MiniLM-L6-v2"
        except Exception as exc:  # noqa: BLE001 - the model is optional for seeding
            print(f"llmproxy seed: embedding model unavailable ({exc}); using synthetic vectors", file=sys.stderr)
    out = []
    for tt in texts:
        centre = rng.normal(size=dim)
        vecs = centre + 0.45 * rng.normal(size=(len(tt), dim))
        out.append((vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32))
    return out, "synthetic"


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / max(float(np.linalg.norm(v)), 1e-9)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# writing


async def seed(
    url: str,
    rows: int,
    *,
    days: float = 30.0,
    seed_value: int = 7,
    embed_sample: int = 20_000,
    use_model: bool = True,
    batch: int = 50_000,
    progress: bool = True,
    now: float | None = None,
) -> dict[str, Any]:
    """Write ``rows`` exchanges (and everything derived from them) into the migrated database at ``url``."""
    import asyncpg
    from pgvector.asyncpg import register_vector

    from intelligence.memory.models import EMBEDDING_DIM
    from intelligence.store.engine import asyncpg_dsn
    from intelligence.store.migrate import upgrade_async

    t0 = time.monotonic()
    await upgrade_async(url)
    rng = np.random.default_rng(seed_value)
    clients = make_clients(rng)
    plan = plan_traffic(rows, days, rng, clients, now=now)
    order = np.argsort(plan.started, kind="stable")  # insert oldest first, like real traffic
    run_id = uuid.uuid4().hex[:6]
    maker = RowMaker(clients, run_id)
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await register_vector(conn)

        def make(idx: np.ndarray) -> list[tuple]:
            return [maker.row(int(k), plan, int(k)) for k in idx]

        # Build the next chunk in a thread while the database ingests this one (both cores busy).
        chunks = [order[lo : lo + batch] for lo in range(0, rows, batch)]
        upcoming = asyncio.create_task(asyncio.to_thread(make, chunks[0])) if chunks else None
        done = 0
        for n in range(len(chunks)):
            assert upcoming is not None
            records = await upcoming
            upcoming = asyncio.create_task(asyncio.to_thread(make, chunks[n + 1])) if n + 1 < len(chunks) else None
            async with conn.transaction():
                await conn.copy_records_to_table("exchanges", records=records, columns=EXCHANGE_COLUMNS)
            done += len(records)
            if progress:
                print(f"  exchanges {done:,}/{rows:,} ({time.monotonic() - t0:.0f} s)", file=sys.stderr)
        async with conn.transaction():
            await _write_sessions(conn, plan, maker)
        vectors, vector_source = text_vectors(use_model, rng, EMBEDDING_DIM)
        async with conn.transaction():
            pattern_ids = await _write_pattern_memory(conn, plan, maker, clients, order, vectors, embed_sample, rng)
        async with conn.transaction():
            # its own generator: the exchanges stay the same for a seed value whatever is added here
            intel = await _write_intelligence(conn, plan, maker, pattern_ids, np.random.default_rng(seed_value + 1))
        if progress:
            print(f"  sessions, patterns and signals written ({time.monotonic() - t0:.0f} s); analysing", file=sys.stderr)
        for table in (
            "exchanges",
            "sessions",
            "exchange_rollups",
            "pattern_rollups",
            "exchange_embeddings",
            "patterns",
            "pattern_counts",
            "outcome_signals",
            "events",
            "anomaly_verdicts",
            "claude_calls",
            "enhancements",
            "experiments",
            "experiment_events",
        ):
            await conn.execute(f"ANALYZE {table}")
    finally:
        await conn.close()
    return {
        "rows": rows,
        "sessions": int(plan.session.max()) + 1 if rows else 0,
        "patterns": len(pattern_ids),
        "run_id": run_id,
        "vectors": vector_source,
        **intel,
        "seconds": round(time.monotonic() - t0, 1),
    }


async def _write_sessions(conn: Any, plan: Plan, maker: RowMaker) -> None:
    import pandas as pd

    ok = plan.status == 200
    df = pd.DataFrame(
        {
            "session": plan.session,
            "client": plan.client,
            "started": plan.started,
            "finished": plan.started + plan.latency_ms / 1000.0,
            "input": np.where(ok | (plan.input_tokens > 0), plan.input_tokens, 0),
            "output": np.where(ok, plan.output_tokens, 0),
            "error": (plan.status != 200).astype(np.int64),
        }
    )
    g = df.groupby("session").agg(
        client=("client", "first"),
        first=("started", "min"),
        last=("finished", "max"),
        n=("started", "size"),
        inp=("input", "sum"),
        out=("output", "sum"),
        err=("error", "sum"),
    )
    records = [
        (
            maker.session_id(int(s)),
            maker.clients[int(r.client)].fingerprint,
            datetime.fromtimestamp(r.first, tz=UTC),
            datetime.fromtimestamp(r.last, tz=UTC),
            int(r.n),
            int(r.inp),
            int(r.out),
            int(r.inp + r.out),
            int(r.err),
        )
        for s, r in zip(g.index, g.itertuples())
    ]
    await conn.copy_records_to_table(
        "sessions",
        records=records,
        columns=(
            "session_id",
            "client_key_fp",
            "first_seen",
            "last_seen",
            "request_count",
            "input_tokens",
            "output_tokens",
            "total_tokens",
            "error_count",
        ),
    )


async def _write_pattern_memory(
    conn: Any,
    plan: Plan,
    maker: RowMaker,
    clients: Sequence[ClientSpec],
    order: np.ndarray,
    vectors: list[np.ndarray],
    embed_sample: int,
    rng: np.random.Generator,
) -> list[int]:
    """Patterns (one per task), every exchange assigned, rollups, usage, outcome signals and feedback;
    returns the pattern id of each task."""
    import pandas as pd

    texts = maker.texts
    now = datetime.now(UTC)
    pattern_ids: list[int] = []
    df = pd.DataFrame({"task": plan.task, "text": plan.text, "started": plan.started})
    first_of_text = df.reset_index().groupby(["task", "text"])["index"].min().to_dict()  # an exchange that asked it
    for ti, t in enumerate(TASKS):
        members = df[df.task == ti]
        centroid = _unit(vectors[ti].mean(axis=0))
        sims = vectors[ti] @ centroid
        first = datetime.fromtimestamp(float(members.started.min()), tz=UTC) if len(members) else now
        last = datetime.fromtimestamp(float(members.started.max()), tz=UTC) if len(members) else now
        examples = [
            {
                "request_id": maker.request_id(int(first_of_text[(ti, int(k))])),
                "text": texts[ti][k][:200],
                "similarity": round(float(sims[k]), 4),
            }
            for k in np.argsort(-sims)[:5]
            if (ti, int(k)) in first_of_text
        ]
        # seeding the same database again adds to the patterns it made before instead of duplicating them
        pid = await conn.fetchval(
            "UPDATE patterns SET member_count = member_count + $2, first_seen = least(first_seen, $3), "
            "last_seen = greatest(last_seen, $4), updated_at = now() "
            "WHERE id = (SELECT min(id) FROM patterns WHERE label = $1 AND redirect_to IS NULL) RETURNING id",
            t.label,
            int(len(members)),
            first,
            last,
        )
        if pid is None:
            pid = await conn.fetchval(
                "INSERT INTO patterns (centroid, label, label_source, examples, member_count, first_seen, last_seen, "
                "spread, radius) VALUES ($1, $2, 'heuristic', $3::jsonb, $4, $5, $6, $7, $8) RETURNING id",
                centroid,
                t.label,
                json.dumps(examples),
                int(len(members)),
                first,
                last,
                float(np.mean(1 - sims)),
                float(np.max(1 - sims)),
            )
        pattern_ids.append(int(pid))
    pid_of_task = np.array(pattern_ids)

    # assignments: every exchange; vectors only for the newest `embed_sample`
    with_vector = np.zeros(len(plan.started), dtype=bool)
    with_vector[order[-embed_sample:] if embed_sample > 0 else []] = True
    sims_all = [vectors[ti] @ _unit(vectors[ti].mean(axis=0)) for ti in range(len(TASKS))]
    records = []
    for i in order:
        ti, k = int(plan.task[i]), int(plan.text[i])
        vec = None
        if with_vector[i]:
            vec = _unit(vectors[ti][k] + rng.normal(scale=0.01, size=vectors[ti].shape[1]).astype(np.float32))
        c = clients[int(plan.client[i])]
        records.append(
            (
                maker.request_id(int(i)),
                vec,
                hashlib.sha256(texts[ti][k].encode()).hexdigest()[:32],
                int(pid_of_task[ti]),
                float(sims_all[ti][k]),
                c.fingerprint,
                MODELS[int(plan.model[i])].name,
                datetime.fromtimestamp(float(plan.started[i]), tz=UTC),
            )
        )
        if len(records) >= 100_000:
            await _copy_embeddings(conn, records)
            records = []
    if records:
        await _copy_embeddings(conn, records)

    # hourly/daily counts and usage, like the worker keeps them
    ts = pd.to_datetime(plan.started, unit="s", utc=True)
    counts = []
    for gran, freq in (("hour", "h"), ("day", "D")):
        g = pd.DataFrame({"p": pid_of_task[plan.task], "b": ts.floor(freq)}).groupby(["p", "b"]).size()
        counts += [(int(p), gran, b.to_pydatetime(), int(n)) for (p, b), n in g.items()]
    await conn.executemany(
        "INSERT INTO pattern_counts (pattern_id, granularity, bucket, n) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (pattern_id, granularity, bucket) DO UPDATE SET n = pattern_counts.n + excluded.n",
        counts,
    )
    usage = []
    for dim, values in (
        ("model", [MODELS[int(m)].name for m in plan.model]),
        ("client", [clients[int(c)].fingerprint for c in plan.client]),
    ):
        g = (
            pd.DataFrame({"p": pid_of_task[plan.task], "v": values, "t": plan.started})
            .dropna()
            .groupby(["p", "v"])["t"]
            .agg(["size", "max"])
        )
        usage += [
            (int(p), dim, str(v), int(r["size"]), datetime.fromtimestamp(float(r["max"]), tz=UTC)) for (p, v), r in g.iterrows()
        ]
    await conn.executemany(
        "INSERT INTO pattern_usage (pattern_id, dimension, value, n, last_seen) VALUES ($1, $2, $3, $4, $5) "
        "ON CONFLICT (pattern_id, dimension, value) DO UPDATE SET n = pattern_usage.n + excluded.n, "
        "last_seen = greatest(pattern_usage.last_seen, excluded.last_seen)",
        usage,
    )

    # outcome signals: only failures are stored (see intelligence/memory/signals.py), plus feedback
    signals = []
    for i in np.flatnonzero(plan.status != 200):
        st = int(plan.status[i])
        signals.append((maker.request_id(int(i)), "status", False, str(st) if st else None, None if st else "transport error"))
    for i in np.flatnonzero(plan.finish_length):
        signals.append((maker.request_id(int(i)), "finish", False, "length", None))
    for i in np.flatnonzero(plan.bad_args):
        signals.append(
            (maker.request_id(int(i)), "tool_args", False, "1", "tool-call arguments not valid JSON for the declared schema")
        )
    feedback = []
    for i in np.flatnonzero(plan.feedback != 0):
        thumbs = "up" if plan.feedback[i] > 0 else "down"
        signals.append((maker.request_id(int(i)), "feedback", thumbs == "up", thumbs, None))
        feedback.append((maker.request_id(int(i)), None, thumbs, None))
    await conn.copy_records_to_table("outcome_signals", records=signals, columns=("request_id", "kind", "ok", "value", "detail"))
    if feedback:
        await conn.copy_records_to_table("feedback", records=feedback, columns=("request_id", "score", "thumbs", "comment"))
    return pattern_ids


async def _copy_embeddings(conn: Any, records: list[tuple]) -> None:
    await conn.copy_records_to_table(
        "exchange_embeddings",
        records=records,
        columns=("request_id", "embedding", "canonical_hash", "pattern_id", "similarity", "client_key_fp", "model", "created_at"),
    )


# ---------------------------------------------------------------------------------------------
# the intelligence's tables: what the guard, the anomaly job and the enhancer leave behind


_PII_KINDS = ("EMAIL_ADDRESS", "PHONE_NUMBER", "PERSON", "CREDIT_CARD", "IBAN_CODE")
_SECRET_KINDS = ("AWS_ACCESS_KEY", "GITHUB_TOKEN", "OPENAI_API_KEY", "PRIVATE_KEY")
_VERDICTS = (("benign", "info", 0.7), ("suspicious", "warning", 0.22), ("malicious", "critical", 0.08))
_CLAUDE_PURPOSES = (("pattern_label", 0.55), ("anomaly_verdict", 0.35), ("enhancement", 0.10))


def _ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(float(seconds), tz=UTC)


async def _write_intelligence(
    conn: Any, plan: Plan, maker: RowMaker, pattern_ids: Sequence[int], rng: np.random.Generator
) -> dict[str, int]:
    """Detections, blocks and redactions in the exchanges' flags, events, anomaly verdicts, Claude calls,
    enhancements, experiments (with their exposures in flags) and their history, at rates the Security,
    Experiments and System pages would see in a month of a team's traffic."""
    n = len(plan.started)
    if n == 0:
        return {}
    now = float(plan.started.max())
    flags: dict[int, dict[str, Any]] = {}
    pii = np.flatnonzero(rng.random(n) < 0.02)
    secrets = np.flatnonzero(rng.random(n) < 0.004)
    injection = np.flatnonzero(rng.random(n) < 0.003)
    for group, picked, kinds in (("pii", pii, _PII_KINDS), ("secrets", secrets, _SECRET_KINDS)):
        for i in picked:
            det = flags.setdefault(int(i), {}).setdefault("detections", {"pii": {}, "secrets": {}, "flags": []})
            det[group][kinds[int(rng.integers(len(kinds)))]] = int(rng.integers(1, 4))
    for i in injection:
        det = flags.setdefault(int(i), {}).setdefault("detections", {"pii": {}, "secrets": {}, "flags": []})
        det["injection_score"] = round(float(rng.uniform(0.86, 0.99)), 3)
        det["injection_layer"] = "heuristic" if rng.random() < 0.6 else "classifier"
        if rng.random() < 0.3:
            det["flags"] = ["zero_width"]
    blocked = [i for i in (*secrets.tolist(), *injection.tolist()) if rng.random() < 0.5]
    for i in blocked:
        rule = "no-secrets" if "secrets" in flags[i]["detections"] and flags[i]["detections"]["secrets"] else "injection"
        flags[i]["policy"] = {
            "block": {"rule": f"default/{rule}", "status": 403, "code": "policy_blocked", "message": "request blocked by policy"},
            "fired": [{"policy": "default", "rule": rule, "actions": ["block"]}],
        }
    for i in pii[rng.random(len(pii)) < 0.4]:
        f = flags[int(i)]
        if "policy" not in f:
            f["redacted_strings"] = int(sum(f["detections"]["pii"].values()))
            f["policy"] = {"fired": [{"policy": "default", "rule": "redact-pii", "actions": ["redact"]}]}

    # Claude calls over the period, a few hundred a day
    k = max(1, n // 40)
    at = np.sort(rng.uniform(float(plan.started.min()), now, k))
    purposes = rng.choice([p for p, _ in _CLAUDE_PURPOSES], size=k, p=[w for _, w in _CLAUDE_PURPOSES])
    outcome = rng.choice(["ok", "parse_error", "error", "budget_exhausted"], size=k, p=[0.96, 0.015, 0.015, 0.01])
    inp, out = rng.integers(300, 4000, k), rng.integers(40, 600, k)
    calls = [
        (
            _ts(at[j]),
            str(purposes[j]),
            f"seed:{j}",
            "anthropic",
            "claude-sonnet-4-5",
            int(inp[j]),
            int(out[j]),
            0,
            0,
            round((int(inp[j]) * 3 + int(out[j]) * 15) / 1e6, 6),
            float(rng.uniform(800, 6000)),
            1,
            str(outcome[j]),
        )
        for j in range(k)
    ]
    await conn.copy_records_to_table(
        "claude_calls",
        records=calls,
        columns=(
            "at",
            "purpose",
            "subject",
            "mode",
            "model",
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
            "cost_usd",
            "latency_ms",
            "attempts",
            "outcome",
        ),
    )
    call_ids = [int(r[0]) for r in await conn.fetch("SELECT id FROM claude_calls ORDER BY id DESC LIMIT $1", k)][::-1]

    # anomaly verdicts for the injection-scored exchanges, each with its event
    verdicts, events = [], []
    names = [v for v, _, _ in _VERDICTS]
    for j, i in enumerate(injection.tolist()):
        v = names[int(rng.choice(3, p=[p for _, _, p in _VERDICTS]))]
        t = _ts(plan.started[i] + 60)
        c = maker.clients[int(plan.client[i])].fingerprint
        verdicts.append(
            (
                t,
                maker.request_id(i),
                c,
                ["injection"],
                "judged",
                v,
                round(float(rng.uniform(0.6, 0.98)), 3),
                f"The prompt {'asks the model to ignore its instructions' if v != 'benign' else 'quotes an injection as an example'}.",
                "claude",
                call_ids[j % len(call_ids)],
                "alert" if v != "benign" else None,
                t,
            )
        )
        events.append(
            (
                t,
                "verdict",
                dict(zip(names, ("info", "warning", "critical")))[v],
                f"anomaly verdict: {v}",
                f"request:{maker.request_id(i)}",
                "anomaly",
                t if plan.started[i] < now - 86400 else None,
            )
        )
    await conn.copy_records_to_table(
        "anomaly_verdicts",
        records=verdicts,
        columns=(
            "at",
            "request_id",
            "client_key_fp",
            "detectors",
            "status",
            "verdict",
            "confidence",
            "reasoning",
            "source",
            "claude_call_id",
            "action",
            "judged_at",
        ),
    )
    for i in blocked:
        t = _ts(plan.started[i])
        events.append(
            (
                t,
                "block",
                "warning",
                f"blocked by {flags[i]['policy']['block']['rule']}",
                f"request:{maker.request_id(i)}",
                "guard",
                t if plan.started[i] < now - 86400 else None,
            )
        )
    for day in range(int((now - float(plan.started.min())) // 86400)):
        if rng.random() < 0.3:
            t = _ts(now - day * 86400 - float(rng.uniform(0, 86400)))
            events.append((t, "spike", "warning", "error rate 27% over the last 300 s", "fleet", "spikes", t if day else None))

    # enhancements: candidates, running and paused experiments (exposed in flags), decided ones
    plan_of = (
        ("candidate", None),
        ("candidate", None),
        ("testing", "running"),
        ("testing", "running"),
        ("testing", "paused"),
        ("active", "promoted"),
        ("rolled_back", "rolled_back"),
    )
    for e, (status, exp_status) in enumerate(plan_of):
        pid = int(pattern_ids[e % len(pattern_ids)])
        eid = await conn.fetchval(
            "INSERT INTO enhancements (pattern_id, version, kind, spec, rationale, status, claude_call_id, created_at) "
            "VALUES ($1, (SELECT coalesce(max(version), 0) + 1 FROM enhancements WHERE pattern_id = $1), "
            "'system_prompt', $2::jsonb, $3, $4, $5, $6) RETURNING id",
            pid,
            json.dumps({"text": "Answer concisely; return valid JSON for tool arguments.", "position": "append"}),
            "Failures of this pattern are mostly truncated answers and invalid tool arguments.",
            status,
            call_ids[(len(call_ids) - 1 - e) % len(call_ids)],
            _ts(now - (20 - e) * 86400),
        )
        if exp_status is None:
            continue
        started = now - (16 - e) * 86400
        decided = _ts(now - 6 * 86400) if exp_status in ("promoted", "rolled_back") else None
        stats = {
            "arms": {"control": {"n": 4000, "successes": 3400}, "variant": {"n": 4000, "successes": 3520}},
            "effect": 0.03,
            "effect_ci": [-0.01, 0.07],
            "p_value": 0.08,
            "decision": "continue",
        }
        xid = await conn.fetchval(
            "INSERT INTO experiments (enhancement_id, pattern_id, status, stats, created_by, started_at, updated_at, "
            "decided_at, decision_reason) VALUES ($1, $2, $3, $4::jsonb, 'seed', $5, $5, $6, $7) RETURNING id",
            eid,
            pid,
            exp_status,
            json.dumps(stats),
            _ts(started),
            decided,
            "" if decided is None else f"{exp_status.replace('_', ' ')} by the evaluator",
        )
        await conn.executemany(
            "INSERT INTO experiment_events (experiment_id, at, action, actor, detail) VALUES ($1, $2, $3, $4, '{}'::jsonb)",
            [(xid, _ts(started), "start", "seed")] + ([(xid, decided, exp_status, "evaluator")] if decided else []),
        )
        events.append(
            (_ts(started), "experiment", "info", f"experiment {xid} started", f"experiment:{xid}", "enhance", _ts(started))
        )
        task = e % len(pattern_ids)
        exposed = np.flatnonzero(
            (plan.task == task) & (plan.started >= started) & (plan.started < (decided.timestamp() if decided else now + 1))
        )
        for i in exposed.tolist():
            arm = "control" if (int(plan.session[i]) * 2654435761 + xid) % 100 < 50 else "variant"
            flags.setdefault(i, {})["enhancement"] = {
                "experiment": int(xid),
                "enhancement": int(eid),
                "arm": arm,
                "pattern": pid,
                "patch": [],
            }
        if exp_status == "promoted":  # from then on every request of the pattern gets it
            for i in np.flatnonzero((plan.task == task) & (plan.started >= decided.timestamp())).tolist():
                flags.setdefault(i, {})["enhancement"] = {
                    "experiment": None,
                    "enhancement": int(eid),
                    "arm": "active",
                    "pattern": pid,
                    "patch": [],
                }

    events.sort(key=lambda r: r[0])
    await conn.copy_records_to_table(
        "events",
        records=[(*r, "dashboard:seed" if r[6] else None) for r in events],
        columns=("at", "kind", "severity", "title", "subject", "source", "acknowledged_at", "acknowledged_by"),
    )
    # flags go onto exchanges already written: one UPDATE joined on the primary key
    await conn.execute("CREATE TEMP TABLE seed_flags (request_id text PRIMARY KEY, patch jsonb) ON COMMIT DROP")
    await conn.copy_records_to_table("seed_flags", records=[(maker.request_id(i), json.dumps(f)) for i, f in flags.items()])
    await conn.execute("UPDATE exchanges e SET flags = e.flags || s.patch FROM seed_flags s WHERE e.request_id = s.request_id")
    return {"flagged": len(flags), "events": len(events), "verdicts": len(verdicts), "claude_calls": k}


# ---------------------------------------------------------------------------------------------
# command


def run(args: argparse.Namespace) -> int:
    from intelligence.ops.stack import StackState

    if args.rows < 0:
        print("llmproxy seed: --rows must be >= 0", file=sys.stderr)
        return 2
    url = args.database_url or os.environ.get("DATABASE_URL")
    embedded = None
    if not url:
        state = StackState.load(args.data_dir)
        if state is not None:
            url = state.database_url
        else:
            from intelligence.embedded_pg import start_embedded

            embedded = start_embedded(args.data_dir)
            url = embedded.url
            print(f"llmproxy seed: embedded Postgres in {args.data_dir.resolve()}", file=sys.stderr)
    try:
        result = asyncio.run(
            seed(
                url,
                args.rows,
                days=args.days,
                seed_value=args.seed,
                embed_sample=args.embed_sample,
                use_model=not args.no_model,
                batch=max(1000, args.batch),
            )
        )
    finally:
        if embedded is not None:
            embedded.stop()
    print(json.dumps(result))
    return 0
