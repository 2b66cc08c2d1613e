-- What a trace carries besides its last question and answer, for the judge and the rules:
-- the retrieved context (RAG), the conversation before the answer, the agent's tool calls.
-- Own columns rather than keys in metadata: metadata is the app's free-form object (read by
-- the cause analysis key by key), and these parts are large, typed and validated.
-- NULL: the source did not say; an empty list: it said there was nothing (no documents
-- retrieved, no tool called).
ALTER TABLE raw_traces ADD COLUMN context JSON;        -- [{id, text, score}], in retrieval order
ALTER TABLE raw_traces ADD COLUMN conversation JSON;   -- [{role, content}], oldest first
ALTER TABLE raw_traces ADD COLUMN tool_calls JSON;     -- [{name, arguments, result}], in call order
