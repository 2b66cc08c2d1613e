"""Seeded demo traffic for a customer-support bot, with a quality regression injected.

About 2,000 traces a day over 30 days, five segments. From ``REGRESSION_START`` on, a prompt
change (prompt_version v2) makes the *billing* segment refuse or cut off many answers; on
``REGRESSION_FIXED`` (six days before the end) billing goes back to prompt v1.

The *shipping* segment is a RAG app: each trace carries the documents retrieved for it
(``retrieved_documents``). From ``UNGROUNDED_START`` to ``UNGROUNDED_END`` (days before the
billing regression, not overlapping it) a retrieval change leaves the model answering from
its own assumptions: many shipping answers stay fluent, on topic and actionable but no
longer follow the documents (invented delivery times, fees, places). Only a groundedness
check sees it: the quality judge's rules, the refusal and cut-off signals and the answer
lengths stay as they were.

A handful of malformed lines per day exercise the ingestion checks. The manifest says what
was injected, where and from when, so the demo can check itself.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from pathlib import Path

START = dt.date(2026, 10, 1)
DAYS = 30
REGRESSION_START = dt.date(2026, 10, 22)
REGRESSION_FIXED = dt.date(2026, 10, 25)  # the first day billing is back on v1
REGRESSED_SEGMENT = "billing"
RAG_SEGMENT = "shipping"
UNGROUNDED_START = dt.date(2026, 10, 12)
UNGROUNDED_END = dt.date(2026, 10, 16)  # the last ungrounded day
UNGROUNDED_SHARE = 0.6  # of the shipping answers that would have been good
TRACES_PER_DAY = 2000
SEED = 20261001

SEGMENT_SHARE = {
    "billing": 0.25,
    "shipping": 0.25,
    "returns": 0.2,
    "account": 0.15,
    "product": 0.15,
}

# (query template, good answer template) per segment. {x} slots are filled from SLOTS.
TEMPLATES = {
    "billing": [
        (
            "Why was I charged twice for order {order}?",
            "I checked order {order} and see two charges: one is a temporary authorisation that "
            "drops off within 3 business days. If it is still there after that, reply here and "
            "I will refund it.",
        ),
        (
            "How do I update the credit card on my account?",
            "You can update your card under Account > Billing > Payment methods: click Add card, "
            "then set it as default and remove the old one.",
        ),
        (
            "Can I get an invoice for my {month} payment?",
            "Yes. Go to Account > Billing > Invoices, select {month} and click Download PDF. The "
            "invoice includes your VAT number if you added one.",
        ),
        (
            "My subscription renewed but I wanted to cancel, can I get a refund?",
            "I have started a refund for the renewal charge; it will reach your card within 5 "
            "business days. I have also turned off auto-renew so it will not happen again.",
        ),
        (
            "What does the charge {code} on my statement mean?",
            "The charge {code} is our monthly plan fee. You can see the matching invoice under "
            "Account > Billing > Invoices, with the date and amount.",
        ),
    ],
    "shipping": [
        (
            "Where is my order {order}?",
            "Order {order} left our warehouse yesterday and is with the courier. You can track it "
            "with the link in your confirmation email; delivery is expected within 2 days.",
        ),
        (
            "Do you ship to {country}?",
            "Yes, we ship to {country}. Standard delivery takes 5-7 business days and you can "
            "choose express at checkout for 2-3 days.",
        ),
        (
            "My package says delivered but I never got it.",
            "Sorry your package has not reached you. First check with neighbours and your building's "
            "mailroom. If it does not turn up within 24 hours, reply here and we will send a "
            "replacement.",
        ),
        (
            "Can I change the delivery address for order {order}?",
            "You can change the address while order {order} is still processing: open the order "
            "page, click Edit address and save. Once it ships, the courier can redirect it.",
        ),
    ],
    "returns": [
        (
            "How do I return the {item} I bought?",
            "You can return the {item} within 30 days. Go to Orders, select the item, click "
            "Return and print the free label; the refund is issued when it reaches us.",
        ),
        (
            "The {item} arrived broken, what can I do?",
            "I am sorry the {item} arrived damaged. I have issued a replacement at no cost; you "
            "do not need to send the broken one back.",
        ),
        (
            "When will I get my refund for the returned {item}?",
            "Refunds are processed within 3 business days of the {item} reaching our warehouse, "
            "then your bank takes 2-5 days. You can check the status on the Orders page.",
        ),
    ],
    "account": [
        (
            "I can't log in to my account.",
            "Let's get you back into your account. Click Forgot password on the login page, then follow the link we "
            "email you. If the email does not arrive within 10 minutes, check your spam folder.",
        ),
        (
            "How do I change the email on my account?",
            "Go to Account > Profile, click Edit next to your email, enter the new address and "
            "confirm it with the code we send you.",
        ),
        (
            "How do I delete my account?",
            "You can delete your account under Account > Privacy > Delete account. We will email "
            "a confirmation first; deletion completes within 30 days.",
        ),
        (
            "How do I turn on two-factor authentication?",
            "Open Account > Security, select Two-factor authentication, then scan the QR code "
            "with your authenticator app and enter the 6-digit code.",
        ),
    ],
    "product": [
        (
            "Is the {item} compatible with {device}?",
            "Yes, the {item} works with {device}. Pair it from the {device} Bluetooth settings, "
            "then open our app to update its firmware.",
        ),
        (
            "What is the battery life of the {item}?",
            "The {item} lasts about 20 hours on a charge with normal use. You can extend it by "
            "turning off the always-on display in the app settings.",
        ),
        (
            "Does the {item} come with a warranty?",
            "The {item} has a 2-year warranty covering defects. You can register it in the app "
            "under Devices > Warranty to speed up any claim.",
        ),
    ],
}

# The shipping knowledge base: the documents retrieved for each shipping question (by its
# template), what a good answer follows, and an answer that ignores them: on topic, fluent,
# actionable and about as long, with facts that are not in the documents.
KNOWLEDGE = {
    "Where is my order {order}?": (
        [
            "Tracking: once an order leaves our warehouse it is with the courier. Customers "
            "can track it with the link in the confirmation email.",
            "Delivery is expected within 2 days of an order leaving the warehouse.",
        ],
        "Order {order} is being packed at our partner depot and should ship next week. You "
        "can follow it in the mobile app; couriers phone the evening before they come.",
    ),
    "Do you ship to {country}?": (
        [
            "We ship to {country} and to most other countries. Standard delivery takes 5-7 "
            "business days.",
            "Express delivery can be chosen at checkout and takes 2-3 days.",
        ],
        "Yes, we ship to {country}. Shipping there is always free and arrives overnight by "
        "air; you can pay any customs fee to the driver at the door.",
    ),
    "My package says delivered but I never got it.": (
        [
            "Missing package marked delivered: we are sorry the package has not reached the "
            "customer. First check with neighbours and the building's mailroom.",
            "If the package does not turn up within 24 hours, reply here and we will send a "
            "replacement.",
        ],
        "Sorry your package has not reached you. Couriers often leave parcels at a nearby "
        "pickup point for a week, so you can collect it there with photo ID.",
    ),
    "Can I change the delivery address for order {order}?": (
        [
            "The delivery address can be changed while the order is still processing: open "
            "the order page, click Edit address and save.",
            "Once an order ships, the courier can redirect it.",
        ],
        "You can change the address for order {order} at any time, even in transit: open "
        "our courier partner's site and pick any pickup locker near you for free.",
    ),
}
# Every shipping question retrieves its own documents and one unrelated shipping document.
OTHER_DOCUMENT = "Parcels over 30 kg ship by freight and need a delivery appointment."

SLOTS = {
    "order": lambda r: f"#{r.randint(100000, 999999)}",
    "month": lambda r: r.choice(
        [
            "January",
            "February",
            "March",
            "April",
            "May",
            "June",
            "July",
            "August",
            "September",
            "October",
        ]
    ),
    "code": lambda r: f"ACME*{r.choice(['PLAN', 'SUB', 'PRO'])}{r.randint(10, 99)}",
    "country": lambda r: r.choice(["Canada", "Germany", "Japan", "Brazil", "Kenya", "Norway"]),
    "item": lambda r: r.choice(["headphones", "smart watch", "speaker", "charger", "earbuds"]),
    "device": lambda r: r.choice(["iPhone 15", "Pixel 8", "a Windows laptop", "a MacBook"]),
}

# Everyday imperfections present on every day, so the baseline is not artificially perfect.
# "vague" answers are on topic but give no next step (the heuristic judge scores them 4);
# "terse" ones are useless (scored 1) and rare.
BASELINE_FLAWS = {"terse": 0.003, "vague": 0.08}
REGRESSION_FLAWS = {"refusal": 0.40, "truncated": 0.15}

REFUSALS = [
    "I'm sorry, but I can't help with billing questions. Please contact support.",
    "I can't assist with payment or charges. Is there anything else?",
    "I'm unable to discuss billing matters in this chat.",
]
MODELS = {"v1": "support-bot-2026-09", "v2": "support-bot-2026-10"}


def _fill(template: str, values: dict[str, str]) -> str:
    return template.format(**values)


def _answer(rng: random.Random, query: str, good: str, regressed: bool) -> tuple[str, str]:
    """(answer, flaw) where flaw names what was done to the good answer."""
    roll = rng.random()
    if regressed:
        if roll < REGRESSION_FLAWS["refusal"]:
            return rng.choice(REFUSALS), "refusal"
        roll -= REGRESSION_FLAWS["refusal"]
        if roll < REGRESSION_FLAWS["truncated"]:
            words = good.split()
            return " ".join(words[: max(4, len(words) // 3)]), "truncated"
        roll = rng.random()
    if roll < BASELINE_FLAWS["terse"]:
        return "Please check your account page.", "terse"
    roll -= BASELINE_FLAWS["terse"]
    if roll < BASELINE_FLAWS["vague"]:
        topic = query.rstrip("?.!").lower()
        return (
            f'Thanks for asking "{topic}". Our team sees this often and it is usually sorted '
            "out quickly.",
            "vague",
        )
    return good, "none"


def _retrieved(rng: random.Random, query_t: str, values: dict[str, str]) -> list[dict]:
    docs, _ = KNOWLEDGE[query_t]
    key = query_t.split("{")[0].strip().lower().replace(" ", "-")[:16]
    out = [
        {
            "id": f"kb-{key}-{i}",
            "text": _fill(text, values),
            "score": round(rng.uniform(0.7, 0.95), 3),
        }
        for i, text in enumerate(docs)
    ]
    out.append(
        {"id": "kb-freight", "text": OTHER_DOCUMENT, "score": round(rng.uniform(0.3, 0.5), 3)}
    )
    return out


def _ungrounded_day(day: dt.date) -> bool:
    return UNGROUNDED_START <= day <= UNGROUNDED_END


def day_traces(day: dt.date, seed: int = SEED) -> list[dict]:
    rng = random.Random(f"{seed}-{day.isoformat()}")
    # The RAG segment's draws come from their own stream: the rest of the traffic (and so the
    # billing story) is the same draw for draw as without it.
    rag_rng = random.Random(f"{seed}-{day.isoformat()}-rag")
    n = int(TRACES_PER_DAY * rng.uniform(0.95, 1.05))
    segments = list(SEGMENT_SHARE)
    weights = [SEGMENT_SHARE[s] for s in segments]
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    traces = []
    for _ in range(n):
        segment = rng.choices(segments, weights)[0]
        query_t, answer_t = rng.choice(TEMPLATES[segment])
        values = {k: f(rng) for k, f in SLOTS.items()}
        regressed_version = (
            REGRESSION_START <= day < REGRESSION_FIXED and segment == REGRESSED_SEGMENT
        )
        version = "v2" if regressed_version else "v1"
        query = _fill(query_t, values)
        answer, flaw = _answer(rng, query, _fill(answer_t, values), regressed_version)
        # Busier in the (UTC) afternoon, like a European/US support desk.
        seconds = min(86399, max(0, int(rng.gauss(15 * 3600, 4 * 3600))))
        ts = start + dt.timedelta(seconds=seconds, milliseconds=rng.randint(0, 999))
        rag: dict = {}
        if segment == RAG_SEGMENT:
            rag["retrieved_documents"] = _retrieved(rag_rng, query_t, values)
            ungrounded = rag_rng.random() < UNGROUNDED_SHARE
            if flaw == "none" and _ungrounded_day(day) and ungrounded:
                answer, flaw = _fill(KNOWLEDGE[query_t][1], values), "ungrounded"
        traces.append(
            {
                "trace_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "timestamp": ts.isoformat().replace("+00:00", "Z")
                if rng.random() < 0.8
                else int(ts.timestamp() * 1000),
                "user_query": query,
                "assistant_response": answer,
                "segment": segment,
                "model": MODELS[version],
                "prompt_version": version,
                "user_id": f"user-{rng.randint(1, 5000):05d}",
                "metadata": {"channel": rng.choice(["web", "app", "email"]), "flaw": flaw},
                **rag,
            }
        )
    traces.sort(key=lambda t: t["trace_id"])
    return traces


def malformed_lines(day: dt.date, good: list[dict]) -> list[str]:
    """A few broken lines a real log shipper produces now and then."""
    sample = dict(good[0])
    return [
        json.dumps(sample)[:57],  # cut off mid-write
        json.dumps({k: v for k, v in sample.items() if k != "user_query"}),  # missing field
        json.dumps({**sample, "trace_id": 12345}),  # wrong type
    ]


def generate(out_dir: Path, seed: int = SEED) -> dict:
    """Write one JSONL file per day and the manifest; returns the manifest."""
    inbox = out_dir
    inbox.mkdir(parents=True, exist_ok=True)
    days = [START + dt.timedelta(days=i) for i in range(DAYS)]
    counts = {}
    for day in days:
        traces = day_traces(day, seed)
        lines = [json.dumps(t, ensure_ascii=False) for t in traces]
        bad = malformed_lines(day, traces)
        # Spread the bad lines through the file.
        for i, line in enumerate(bad):
            lines.insert((i + 1) * len(lines) // (len(bad) + 1), line)
        tmp = inbox / f".{day.isoformat()}.jsonl.tmp"
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        tmp.replace(inbox / f"{day.isoformat()}.jsonl")
        counts[day.isoformat()] = {"traces": len(traces), "malformed_lines": len(bad)}
    return {
        "generator": "eval_pipeline.demo.traffic",
        "seed": seed,
        "first_day": days[0].isoformat(),
        "last_day": days[-1].isoformat(),
        "segments": SEGMENT_SHARE,
        "injected_regression": {
            "segment": REGRESSED_SEGMENT,
            "from_day": REGRESSION_START.isoformat(),
            "fixed_on": REGRESSION_FIXED.isoformat(),
            "prompt_version": "v2",
            "what": "the v2 prompt makes the billing bot refuse "
            f"{REGRESSION_FLAWS['refusal']:.0%} of questions and cut off "
            f"{REGRESSION_FLAWS['truncated']:.0%} of answers mid-sentence",
        },
        "injected_groundedness_regression": {
            "segment": RAG_SEGMENT,
            "from_day": UNGROUNDED_START.isoformat(),
            "last_day": UNGROUNDED_END.isoformat(),
            "what": f"a retrieval change: {UNGROUNDED_SHARE:.0%} of the good shipping answers "
            "stay fluent and on topic but stop following the retrieved documents",
        },
        "baseline_flaws": BASELINE_FLAWS,
        "days": counts,
    }
