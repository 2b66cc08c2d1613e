"""The SQL of the inbox's fast path (:mod:`eval_pipeline.core.sources.inbox_fast`): the line
map, and the one ``read_json`` pass whose verdict per line accepts a row only when every check
of the line classifier (:mod:`eval_pipeline.core.sources.inbox_sql`) would accept it with the
same values; the tests hold the two paths to the same rows and rejects.
"""

from __future__ import annotations

import datetime as dt

from eval_pipeline.core.sources import trace_parts

# Verdicts of the fast path.
GOOD, OTHER_DAY, CHECK = 0, 1, 2
# The lines that are not the day's accepted rows are appended under this date, never a day's
# (DuckDB rewrites a transaction's appended rows at commit if any is deleted before it), and
# deleted once the day is committed (``release_unstaged``). Their source says what they are.
UNSTAGED_DATE = dt.date(1, 1, 1)
CHECK_MARK, OTHER_MARK, DROPPED_MARK = "~check", "~other-day", "~dropped"

# Strings come out of the JSON reader as VARCHAR (unescaped once, by the parser); the fields
# that may be other types come out as JSON text, whose first character is the type. A trace's
# lists of parts come out as JSON text too (absent on most lines); a list is then read into
# typed structs from its own text, so it is checked and normalised without parsing the line
# or the list again.
_COLUMNS = (
    "{'trace_id': 'VARCHAR', 'timestamp': 'JSON', 'user_query': 'VARCHAR', "
    "'assistant_response': 'VARCHAR', 'segment': 'VARCHAR', 'model': 'VARCHAR', "
    "'prompt_version': 'VARCHAR', 'user_id': 'VARCHAR', 'metadata': 'JSON', "
    "'context': 'JSON', 'retrieved_documents': 'JSON', 'conversation': 'JSON', "
    "'tool_calls': 'JSON'}"
)
_STRINGS = ("trace_id", "user_query", "assistant_response", "segment", "model")
_STRINGS += ("prompt_version", "user_id")
# What the JSON reader writes for a number, boolean, object or array read as VARCHAR starts
# with one of these (NaN and Infinity included: DuckDB's JSON reader takes them).
_NOT_A_STRING_START = "{[tfnNI-0123456789"


def _starts_with_one_of(x: str, chars: str) -> str:
    """SQL: the value's first character is one of ``chars`` (NULL for NULL). ascii() reads
    the first character's code point without copying it."""
    return f"ascii({x}) IN ({', '.join(str(ord(c)) for c in chars)})"


def _looks_like_json(x: str) -> str:
    """SQL: the value may be the JSON text of a non-string (NULL for NULL)."""
    return _starts_with_one_of(x, _NOT_A_STRING_START)


def _is_string(field: str) -> str:
    """SQL: the field is missing, null or a JSON string.

    A non-string comes out as its JSON text, which is valid JSON; a real string rarely starts
    like one and is valid JSON, and only such a line goes to the classifier. A CASE, not OR:
    DuckDB evaluates both sides of an OR for every row.
    """
    return f"CASE WHEN {_looks_like_json(field)} THEN NOT json_valid({field}) ELSE true END"


_DOCS = '[{"id": "VARCHAR", "text": "VARCHAR", "content": "VARCHAR", "score": "JSON"}]'
_TURNS = '[{"role": "VARCHAR", "content": "VARCHAR"}]'
_CALLS = '[{"name": "VARCHAR", "arguments": "JSON", "result": "JSON"}]'


def _text(x: str) -> str:
    """SQL: a part's string field (VARCHAR from the JSON reader) is a string within the cap.

    A non-string comes out as its JSON text, which is valid JSON; a string that is valid JSON
    too is left to the classifier. strlen counts bytes, never fewer than the characters the
    classifier counts, so a text within it is within the classifier's cap. CASE, not AND:
    DuckDB evaluates every operand of an AND inside a lambda.
    """
    return (
        f"CASE WHEN {x} IS NULL OR strlen({x}) > $max_chars THEN false "
        f"WHEN {_looks_like_json(x)} THEN NOT json_valid({x}) "
        "ELSE true END"
    )


# An element that is not an object comes out with every field NULL, so it fails these.
_DOC_OK = (
    f"CASE WHEN e.text IS NOT NULL THEN {_text('e.text')} ELSE {_text('e.content')} END"
    # an id is a string or an integer (either comes out as its text; an integer past 18 digits
    # may be read as a double, so the classifier decides); anything else is JSON
    f" AND CASE WHEN e.id IS NULL THEN true WHEN NOT {_looks_like_json('e.id')} THEN true"
    " WHEN NOT json_valid(e.id) THEN true ELSE regexp_full_match(e.id, '-?[0-9]{1,18}') END"
    # a score is a number (its JSON text starts with a minus or a digit) or absent
    " AND CASE WHEN e.score IS NULL THEN true"
    f" ELSE {_starts_with_one_of('e.score', '-0123456789')} END"
)
_TURN_OK = f"{_text('e.role')} AND trim(e.role) <> '' AND {_text('e.content')}"
_CALL_OK = (
    f"{_text('e.name')} AND trim(e.name) <> ''"
    " AND coalesce(strlen(e.arguments), 0) <= $max_chars"
    " AND coalesce(strlen(e.result), 0) <= $max_chars"
)


def _all(items: str, limit: int, ok: str) -> str:
    """SQL: a list (NULL for none) has at most ``limit`` items, each ``ok``. The CASE keeps the
    lambda off the lines without the list, most of them."""
    return (
        f"CASE WHEN {items} IS NULL THEN true ELSE len({items}) <= {limit} AND "
        f"coalesce(list_bool_and(list_transform({items}, lambda e: coalesce({ok}, false))), true)"
        " END"
    )


# Why a line goes to the classifier, tested in this order (a NULL test is not a reason).
_CHECKS = (
    "trace_id IS NULL OR user_query IS NULL OR assistant_response IS NULL OR ts IS NULL",
    f"NOT ({' AND '.join(_is_string(f) for f in _STRINGS)})",
    # trim removes spaces and Unicode spaces: only such a first character needs it
    "CASE WHEN ascii(trace_id) = 32 OR ascii(trace_id) > 127"
    " THEN length(trim(trace_id)) = 0 ELSE trace_id = '' END",
    # epoch seconds read as milliseconds would land in 1970: the classifier says so
    "CASE WHEN left(ts_json, 1) = '\"' THEN false ELSE abs(try_cast(ts_json AS DOUBLE)) < 1e11 END",
    "strlen(user_query) > $max_chars OR strlen(assistant_response) > $max_chars",
    "metadata IS NOT NULL AND left(metadata, 1) <> '{'",
    # a trace's parts: the classifier's checks (core/sources/trace_parts.py) on the typed
    # lists; a list field that is not a JSON array (the classifier names what it is) is left
    # to it
    "p_ctx IS NOT NULL AND (left(p_ctx, 1) <> '\"' OR strlen(p_ctx) > $max_chars"
    " OR j_docs IS NOT NULL)",
    "(j_docs IS NOT NULL AND p_docs IS NULL) OR (j_conv IS NOT NULL AND p_conv IS NULL)"
    " OR (j_calls IS NOT NULL AND p_calls IS NULL)",
    f"NOT {_all('p_docs', trace_parts.MAX_DOCUMENTS, _DOC_OK)}",
    f"NOT {_all('p_conv', trace_parts.MAX_TURNS, _TURN_OK)}",
    f"NOT {_all('p_calls', trace_parts.MAX_TOOL_CALLS, _CALL_OK)}",
)
_VERDICT = "\n".join(
    [
        "CASE",
        *(f"WHEN {c} THEN {CHECK}" for c in _CHECKS),
        f"WHEN ts >= $start AND ts < $end THEN {GOOD}",
        f"WHEN $dated THEN {CHECK}",
        f"ELSE {OTHER_DAY} END",
    ]
)

# The same values as trace_parts.columns_sql gives the classifier (to_json of a struct writes
# what json_object writes).
_PARTS_COLUMNS = """
    CASE WHEN p_ctx IS NOT NULL THEN
            CASE WHEN trim(p_ctx ->> '$') = '' THEN '[]'::JSON
                 ELSE json_array(json_object('id', NULL, 'text', p_ctx ->> '$', 'score', NULL))
            END
         WHEN p_docs IS NOT NULL THEN to_json(list_transform(p_docs, lambda e: {
            'id': e.id, 'text': coalesce(e.text, e.content), 'score': try_cast(CAST(e.score AS VARCHAR) AS DOUBLE)}))
    END AS context,
    CASE WHEN p_conv IS NOT NULL THEN to_json(list_transform(p_conv,
        lambda e: {'role': e.role, 'content': e.content}))
    END AS conversation,
    CASE WHEN p_calls IS NOT NULL THEN to_json(list_transform(p_calls,
        lambda e: {'name': e.name, 'arguments': e.arguments, 'result': e.result}))
    END AS tool_calls"""


# The line map: each line's byte length and whether it is blank (JSON whitespace only), in
# file order. CASE keeps trim off the lines that do not start with a blank.
LINE_MAP_SQL = """
INSERT INTO _ln
SELECT $file_no, strlen(raw)::INTEGER AS n,
    CASE WHEN raw IS NULL THEN true
         WHEN left(raw, 1) IN (' ', chr(9)) THEN trim(raw, ' ' || chr(9)) = ''
         ELSE false END AS blank
FROM read_csv($path, columns = {'raw': 'VARCHAR'}, header = false, auto_detect = false,
    delim = chr(1), quote = '', escape = '', new_line = '\\n', max_line_size = $line_size,
    buffer_size = $buffer_size, parallel = true)
"""

INSERT_SQL = f"""
INSERT INTO raw_traces (partition_date, trace_id, ts, user_query, assistant_response, segment,
    model, prompt_version, user_id, metadata, context, conversation, tool_calls, source,
    source_ref)
SELECT CASE WHEN verdict = {GOOD} THEN $day ELSE $unstaged END,
    CASE WHEN verdict = {GOOD} THEN trace_id ELSE '' END,
    CASE WHEN verdict = {GOOD} THEN ts ELSE TIMESTAMP '1970-01-01' END,
    CASE WHEN verdict = {GOOD} THEN user_query ELSE '' END,
    CASE WHEN verdict = {GOOD} THEN assistant_response ELSE '' END,
    CASE WHEN verdict = {GOOD} THEN nullif(trim(segment), '') END,
    CASE WHEN verdict = {GOOD} THEN model END,
    CASE WHEN verdict = {GOOD} THEN prompt_version END,
    CASE WHEN verdict = {GOOD} THEN user_id END,
    CASE WHEN verdict = {GOOD} THEN metadata END,
    CASE WHEN verdict = {GOOD} THEN context END,
    CASE WHEN verdict = {GOOD} THEN conversation END,
    CASE WHEN verdict = {GOOD} THEN tool_calls END,
    CASE verdict WHEN {GOOD} THEN $source WHEN {OTHER_DAY} THEN '{OTHER_MARK}'
        ELSE '{CHECK_MARK}' END,
    $ref
FROM (
SELECT trace_id, ts, user_query, assistant_response, segment, model, prompt_version, user_id,
    metadata, verdict, {_PARTS_COLUMNS}
FROM (
    SELECT *, {_VERDICT} AS verdict
    FROM (
        SELECT trace_id, user_query, assistant_response, segment, model, prompt_version,
            user_id, metadata, timestamp AS ts_json, context AS p_ctx,
            retrieved_documents AS j_docs, conversation AS j_conv, tool_calls AS j_calls,
            CASE WHEN left(retrieved_documents, 1) = '[' THEN
                json_transform(retrieved_documents, '{_DOCS}') END AS p_docs,
            CASE WHEN left(conversation, 1) = '[' THEN
                json_transform(conversation, '{_TURNS}') END AS p_conv,
            CASE WHEN left(tool_calls, 1) = '[' THEN
                json_transform(tool_calls, '{_CALLS}') END AS p_calls,
            CASE left(timestamp, 1)
                -- an ISO string has no escapes: its text between the quotes is the value
                WHEN '"' THEN CASE WHEN contains(timestamp, '\\') THEN NULL
                    -- the usual form, by a fixed format: no regular expression and no time
                    -- zone arithmetic (what it parses, the casts below parse the same)
                    ELSE coalesce(try_strptime(timestamp, '"%Y-%m-%dT%H:%M:%S.%fZ"'),
                    -- a plain UTC time ("...Z") needs no time zone arithmetic either;
                    -- anything else (an offset, a zone name) is cast with it
                    CASE WHEN regexp_full_match(timestamp,
                        '"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.][0-9]+)?)?Z"')
                        THEN try_cast(substr(timestamp, 2, strlen(timestamp) - 3) AS TIMESTAMP)
                    ELSE try_cast(timestamp[2:-2] AS TIMESTAMPTZ) AT TIME ZONE 'UTC' END) END
                WHEN '-' THEN try(epoch_ms(CAST(CAST(timestamp AS DOUBLE) AS BIGINT)))
                ELSE CASE WHEN left(timestamp, 1) BETWEEN '0' AND '9'
                    THEN try(epoch_ms(CAST(CAST(timestamp AS DOUBLE) AS BIGINT))) END
            END AS ts
        -- the line map has checked every line fits: the reader's buffers are sized from it
        FROM read_json($path, format = 'newline_delimited', ignore_errors = true,
            maximum_object_size = $line_size, columns = {_COLUMNS})
    )
)
)
"""
