-- A vendor's webhook (issue 14): its admins name an HTTPS receiver (on a host the operator
-- allows); custody POSTs the vendor's fetches, refusals, grants and deletions to it, signed
-- with HMAC-SHA256 under `secret`, retried with backoff. `delivered_seq` is the audit log
-- index up to which events were delivered (the log is the queue; nothing else is stored).
CREATE TABLE vendor_webhooks (
    vendor_id      TEXT PRIMARY KEY REFERENCES vendors(id),
    url            TEXT NOT NULL,
    secret         BLOB NOT NULL,
    ca_pem         TEXT,
    delivered_seq  BIGINT NOT NULL,
    failures       BIGINT NOT NULL DEFAULT 0,
    retry_at       BIGINT NOT NULL DEFAULT 0,
    last_error     TEXT,
    created_by     TEXT NOT NULL,
    created_at     BIGINT NOT NULL
);
