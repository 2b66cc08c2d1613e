-- Feedback to eval: thumbs up/down records, rejected lines, processed files, review
-- candidates with their decisions, and golden cases promoted from them (with provenance).

-- One row per feedback record, ever. feedback_id is the record identity (a hash of the
-- record's own feedback_id, which the collector always sets, or, for lines without one, of
-- trace, rating, timestamp, user and comment), so a record seen twice, in the same file or
-- in two files, lands once.
CREATE TABLE feedback (
    feedback_id        VARCHAR   PRIMARY KEY,
    client_feedback_id VARCHAR,               -- the record's id: the client's or the collector's
    trace_id           VARCHAR   NOT NULL,
    rating             VARCHAR   NOT NULL CHECK (rating IN ('up', 'down')),
    comment            VARCHAR,
    user_id            VARCHAR,
    ts                 TIMESTAMP,             -- when the user gave it (UTC), if known
    received_at        TIMESTAMP,             -- when the collector accepted it (UTC)
    extra              JSON,                  -- any other fields the client sent
    file_sha256        VARCHAR   NOT NULL,    -- the file it first arrived in
    line_no            BIGINT    NOT NULL,
    ingested_at        TIMESTAMP NOT NULL
);

-- Lines of a feedback file that could not be used, with where and why.
CREATE TABLE feedback_rejects (
    file_sha256 VARCHAR   NOT NULL,
    file_name   VARCHAR   NOT NULL,
    line_no     BIGINT    NOT NULL,           -- 1-based
    reason      VARCHAR   NOT NULL,
    excerpt     VARCHAR,                      -- the first 200 characters, made printable
    recorded_at TIMESTAMP NOT NULL,
    PRIMARY KEY (file_sha256, line_no)
);

-- Every feedback file ingested, by content hash: re-ingesting the same bytes changes nothing.
CREATE TABLE feedback_files (
    file_sha256   VARCHAR   PRIMARY KEY,
    file_name     VARCHAR   NOT NULL,         -- the name it had when first ingested
    lines         BIGINT    NOT NULL,         -- non-blank lines
    ingested      BIGINT    NOT NULL,         -- new records
    duplicates    BIGINT    NOT NULL,         -- records already in the store (or repeated)
    rejected      BIGINT    NOT NULL,
    first_seen_at TIMESTAMP NOT NULL,
    last_seen_at  TIMESTAMP NOT NULL,
    times_seen    INTEGER   NOT NULL
);

-- One candidate per trace with at least one thumbs-down. A thumbs-down whose trace is not in
-- raw_traces is kept with trace_found = false and filled in when the trace arrives.
CREATE TABLE eval_candidates (
    candidate_id       VARCHAR   PRIMARY KEY,
    trace_id           VARCHAR   NOT NULL,
    trace_found        BOOLEAN   NOT NULL,
    user_query         VARCHAR,
    assistant_response VARCHAR,
    segment            VARCHAR,
    model              VARCHAR,
    prompt_version     VARCHAR,
    trace_date         DATE,
    reports            INTEGER   NOT NULL,    -- thumbs-downs on this trace
    comments           JSON      NOT NULL,    -- their non-empty comments, oldest first
    feedback_ids       JSON      NOT NULL,
    status             VARCHAR   NOT NULL
        CHECK (status IN ('pending', 'approved', 'rejected', 'promoted', 'refused')),
    status_reason      VARCHAR,               -- why refused (e.g. duplicate input)
    case_id            VARCHAR,               -- the golden case it became
    created_at         TIMESTAMP NOT NULL,
    updated_at         TIMESTAMP NOT NULL
);

-- The review trail: every decision recorded, by whom and when (never updated).
CREATE TABLE candidate_reviews (
    review_id       VARCHAR   PRIMARY KEY,
    candidate_id    VARCHAR   NOT NULL,
    decision        VARCHAR   NOT NULL CHECK (decision IN ('approve', 'reject')),
    input           JSON,                     -- the case input (the trace's query by default)
    expected        JSON,                     -- expected answer or the judge's reference notes
    grader          JSON,                     -- {"type": ..., ...params}
    tags            JSON,
    note            VARCHAR,                  -- the reviewer's note (e.g. why rejected)
    reviewer        VARCHAR   NOT NULL,
    reviewed_at     TIMESTAMP NOT NULL,
    via             VARCHAR   NOT NULL        -- 'terminal' or 'import'
);

-- Golden cases that came from feedback, as written to golden.jsonl, with provenance.
CREATE TABLE golden_cases (
    case_id          VARCHAR   PRIMARY KEY,
    candidate_id     VARCHAR,
    review_id        VARCHAR,
    input            JSON      NOT NULL,
    expected         JSON,
    grader           JSON      NOT NULL,
    tags             JSON      NOT NULL,
    provenance       JSON      NOT NULL,
    normalised_input VARCHAR   NOT NULL,
    case_json        VARCHAR   NOT NULL,      -- the exact line in golden.jsonl
    golden_version   VARCHAR   NOT NULL,      -- version of the set right after it was added
    promoted_at      TIMESTAMP NOT NULL
);

-- Every version the golden set has had, as written by promotion.
CREATE TABLE golden_versions (
    golden_version VARCHAR   PRIMARY KEY,
    path           VARCHAR   NOT NULL,
    cases          INTEGER   NOT NULL,
    added          INTEGER   NOT NULL,
    recorded_at    TIMESTAMP NOT NULL
);
