-- Small documents every process shares: approvals waiting and their decisions, the API
-- token registry, the audit log. Keys sort bytewise (C collation), so a key range is a
-- prefix scan and the audit log's time-ordered keys read in time order.
CREATE TABLE medic_documents (
    key   text COLLATE "C" PRIMARY KEY,
    value bytea NOT NULL
);
