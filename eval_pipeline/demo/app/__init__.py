"""The demo's app under test: a small, deterministic support bot for "Acme Outfitters".

It stands in for an LLM application so the regression gate and the A/B comparison can run
offline. Its behaviour comes from a *prompt file*, like a real app's system prompt:

- ``Facts:`` lines (``- key: value``) fill in the answers (return window, refund days...);
- ``Topics you refuse:`` lists topics it will not discuss (it answers with a refusal).

Two prompts ship with it:

- ``prompt_good.txt``: answers every topic;
- ``prompt_regressed.txt``: a plausible "compliance update" that makes it refuse every
  billing question (refunds, charges, invoices, payment methods, membership fees). The
  demo golden set's billing cases fail with it; everything else still passes.

Call it as::

    from eval_pipeline.demo.app import answer
    answer("How long do refunds take?")                                  # good prompt
    answer("How long do refunds take?", prompt_path="regressed")         # regressed prompt
    answer([{"role": "user", "content": "Where is my order?"}], prompt_path="path/to/p.txt")

``answer(input, *, prompt_path=None) -> str``. ``input`` is a question string or a list of
chat messages (the last user message is answered). ``prompt_path`` is a file path or one of
the names ``"good"`` / ``"regressed"``; when None, ``$EVAL_DEMO_PROMPT`` (same forms) is
used, else the good prompt. As a regression target: ``eval_pipeline.demo.app:answer``
(CLI: ``--target eval_pipeline.demo.app:answer --arg prompt_path=regressed``).

Formats it understands in the question: "just the number" / "only the number" (answers
with the bare figure), "reply with only the email" (the bare address), and "as JSON"
(``{"topic", "intent", "answer", "escalate"}``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROMPTS = {"good": HERE / "prompt_good.txt", "regressed": HERE / "prompt_regressed.txt"}
PROMPT_ENV = "EVAL_DEMO_PROMPT"


@dataclass(frozen=True)
class Prompt:
    facts: dict[str, str]
    refused_topics: frozenset[str]


@dataclass(frozen=True)
class Intent:
    name: str
    topic: str
    keywords: tuple[str, ...]
    template: str
    short: str | None = None  # the fact answered for "just the number" / "only the email"


# Most specific first: the first intent with a matching keyword wins.
INTENTS = (
    Intent(
        "duplicate_charge",
        "billing",
        ("charged twice", "double charge", "duplicate charge", "charged two times"),
        "I'm sorry about the duplicate charge. We have flagged it: the extra one is usually "
        "a pending authorization that drops off within 3 business days; if it is still "
        "there after that, email {billing_email} with your order number.",
    ),
    Intent(
        "refund_time",
        "billing",
        ("refund",),
        "Refunds go back to your original payment method within {refund_days} business "
        "days of us receiving the return. You can follow it under Orders > Refunds.",
        "refund_days",
    ),
    Intent(
        "invoice",
        "billing",
        ("invoice", "receipt", "vat"),
        "You can download an invoice for any order: go to Orders, open the order and "
        "click Download invoice (PDF).",
    ),
    Intent(
        "payment_method",
        "billing",
        ("payment method", "credit card", "update my card", "new card", "paypal"),
        "You can update your payment method in Account > Payment methods: click Add card, "
        "then set it as your default.",
    ),
    Intent(
        "membership",
        "billing",
        ("membership", "subscription", "acme plus"),
        "You can cancel Acme Plus at any time in Account > Membership > Cancel; you keep "
        "the benefits until the end of the billing period.",
    ),
    Intent(
        "damaged",
        "returns",
        ("damaged", "broken", "defective", "arrived torn"),
        "I'm sorry it arrived damaged. Go to Orders > Report a problem and attach a photo; "
        "we will send a replacement within 2 business days.",
    ),
    Intent(
        "exchange",
        "returns",
        ("exchange", "different size", "swap"),
        "You can exchange an item for a different size within {return_window_days} days: "
        "go to Orders > Return item and choose Exchange.",
    ),
    Intent(
        "return_window",
        "returns",
        ("return",),
        "You can return unused items within {return_window_days} days of delivery. Go to "
        "Orders > Return item to print a free return label.",
        "return_window_days",
    ),
    Intent(
        "tracking",
        "shipping",
        ("track", "where is my order", "where's my order"),
        "You can track your order under Orders > Track package; we also email you a "
        "tracking link as soon as it ships.",
    ),
    Intent(
        "free_shipping",
        "shipping",
        ("free shipping", "shipping cost", "cost to ship"),
        "Shipping is free on orders over ${free_shipping_over}; below that, standard "
        "shipping costs ${standard_shipping_price}, shown at checkout.",
        "free_shipping_over",
    ),
    Intent(
        "international",
        "shipping",
        ("international", "abroad", "canada", "europe"),
        "We ship to the US, Canada and the EU. You can see the rates for your country at "
        "checkout before you pay.",
    ),
    Intent(
        "shipping_time",
        "shipping",
        ("how long", "delivery time", "arrive", "shipping take", "express"),
        "Standard shipping takes {standard_shipping_days} business days and express takes "
        "{express_shipping_days}. You can choose express at checkout.",
    ),
    Intent(
        "password",
        "account",
        ("password", "log in", "login", "sign in", "locked out"),
        "You can reset your password from the sign-in page: click Forgot password and "
        "follow the link we email you.",
    ),
    Intent(
        "change_email",
        "account",
        ("change my email", "email address on my account", "update my email"),
        "You can change your email address in Account > Profile > Email; we send a "
        "confirmation link to the new address.",
    ),
    Intent(
        "delete_account",
        "account",
        ("delete my account", "close my account"),
        "You can delete your account in Account > Privacy > Delete account; we erase your "
        "data within 30 days.",
    ),
    Intent(
        "contact",
        "account",
        ("contact", "support email", "talk to a person", "human"),
        "You can reach our team at {support_email}; we answer within one business day.",
        "support_email",
    ),
    Intent(
        "warranty",
        "product",
        ("warranty", "guarantee"),
        "Every Acme product has a {warranty_years}-year warranty. You can start a claim "
        "in Orders > Report a problem.",
        "warranty_years",
    ),
    Intent(
        "sizing",
        "product",
        ("size", "sizing", "fit"),
        "You can find the size chart on each product page under Size & fit; if you are "
        "between sizes, we recommend the larger one.",
    ),
    Intent(
        "restock",
        "product",
        ("in stock", "restock", "sold out", "out of stock"),
        "You can click Notify me on the product page and we will email you when it is "
        "back in stock.",
    ),
)

FALLBACK = (
    "I'm not sure I can answer that here. You can email {support_email} and a person will "
    "get back to you within one business day."
)
REFUSAL = (
    "I'm sorry, but I can't help with {topic} questions in chat. Please contact {billing_email}."
)
_FACT = re.compile(r"^\s*-\s*([a-z_]+)\s*:\s*(.+?)\s*$", re.MULTILINE)
_REFUSE = re.compile(r"^Topics you refuse:\s*(.*)$", re.MULTILINE | re.IGNORECASE)
_NUMBER_ONLY = ("just the number", "only the number", "number only")
_EMAIL_ONLY = ("only the email", "just the email", "email address only")


def resolve_prompt_path(prompt_path: str | os.PathLike | None = None) -> Path:
    value = prompt_path if prompt_path is not None else os.environ.get(PROMPT_ENV, "good")
    value = str(value)
    return PROMPTS[value] if value in PROMPTS else Path(value)


@lru_cache(maxsize=16)
def _load_prompt(path: Path, mtime_ns: int) -> Prompt:
    text = path.read_text(encoding="utf-8")
    facts = {k: v for k, v in _FACT.findall(text)}
    m = _REFUSE.search(text)
    refused = {t.strip().lower().rstrip(".") for t in (m.group(1) if m else "").split(",")}
    return Prompt(facts, frozenset(t for t in refused if t and t != "none"))


def load_prompt(prompt_path: str | os.PathLike | None = None) -> Prompt:
    path = resolve_prompt_path(prompt_path)
    return _load_prompt(path, path.stat().st_mtime_ns)


def _question(value: str | list[dict]) -> str:
    if isinstance(value, str):
        return value
    users = [m.get("content", "") for m in value if m.get("role") == "user"]
    return users[-1] if users else ""


def answer(value: str | list[dict], *, prompt_path: str | os.PathLike | None = None) -> str:
    """Answer a support question (see the module docstring)."""
    prompt = load_prompt(prompt_path)
    q = " ".join(_question(value).lower().split())
    intent = next((i for i in INTENTS if any(k in q for k in i.keywords)), None)
    facts = prompt.facts
    escalate = False
    if intent is None:
        topic, name, text = "other", "unknown", FALLBACK.format(**facts)
        escalate = True
    elif intent.topic in prompt.refused_topics:
        topic, name = intent.topic, intent.name
        text = REFUSAL.format(topic=intent.topic, **facts)
        escalate = True
    else:
        topic, name = intent.topic, intent.name
        if intent.short and any(p in q for p in _NUMBER_ONLY + _EMAIL_ONLY):
            return facts[intent.short]
        text = intent.template.format(**facts)
    if "json" in q:
        return json.dumps({"topic": topic, "intent": name, "answer": text, "escalate": escalate})
    return text
