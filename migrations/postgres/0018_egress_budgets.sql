-- Egress budgets (issue 17; 0016 on its branch, numbered 0018 when it landed): limits a
-- vendor's admins set on how much of a model leaves.
-- One row per model with a budget; no row means unlimited. A byte limit is either absolute
-- (`*_bytes`) or a multiple of the model's size in thousandths (`*_size_milli`, 2000 = 2x the
-- newest revision), never both. `window_secs` is the rolling window of both byte limits.
CREATE TABLE model_budgets (
    model_id              TEXT PRIMARY KEY REFERENCES models(id),
    window_secs           BIGINT NOT NULL CONSTRAINT model_budgets_window_positive
                              CHECK (window_secs > 0),
    per_host_bytes        BIGINT,
    per_host_size_milli   BIGINT,
    per_user_bytes        BIGINT,
    per_user_size_milli   BIGINT,
    max_hosts             BIGINT,
    per_host_concurrency  BIGINT,
    set_by                TEXT NOT NULL,
    set_at                BIGINT NOT NULL,
    CONSTRAINT model_budgets_per_host_one_kind
        CHECK (per_host_bytes IS NULL OR per_host_size_milli IS NULL),
    CONSTRAINT model_budgets_per_user_one_kind
        CHECK (per_user_bytes IS NULL OR per_user_size_milli IS NULL)
);

-- Bytes served (reserved before they are sent, in the fetch's audit transaction), in time
-- buckets: a bucket counts toward a window until `bucket_end` leaves it, so the check is one
-- indexed sum per host and per user.
CREATE TABLE egress_use (
    model_id      TEXT NOT NULL REFERENCES models(id),
    host_id       TEXT NOT NULL REFERENCES hosts(id),
    user_id       TEXT NOT NULL,
    bucket_start  BIGINT NOT NULL,
    bucket_end    BIGINT NOT NULL,
    bytes         BIGINT NOT NULL,
    PRIMARY KEY (model_id, host_id, user_id, bucket_start)
);
CREATE INDEX egress_use_by_host ON egress_use (model_id, host_id, bucket_end);
CREATE INDEX egress_use_by_user ON egress_use (model_id, user_id, bucket_end);

-- Fetches in flight, for the per-host concurrency limit: a lease each, renewed while the
-- transfer runs and deleted when it ends; a crashed server's leases simply expire.
CREATE TABLE fetch_leases (
    id          TEXT PRIMARY KEY,
    model_id    TEXT NOT NULL REFERENCES models(id),
    host_id     TEXT NOT NULL REFERENCES hosts(id),
    expires_at  BIGINT NOT NULL
);
CREATE INDEX fetch_leases_by_host ON fetch_leases (model_id, host_id, expires_at);
