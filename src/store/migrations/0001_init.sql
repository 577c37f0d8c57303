CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);
CREATE TABLE credentials (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    role TEXT,
    scopes TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    agent_id TEXT,
    minted_by TEXT,
    description TEXT,
    allowed_ips TEXT,
    max_uses BIGINT,
    uses BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX credentials_tenant ON credentials(tenant_id, kind);
CREATE TABLE secrets (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    path {path_text} NOT NULL,
    current_version BIGINT NOT NULL,
    tier TEXT NOT NULL,
    description TEXT,
    tags TEXT NOT NULL,
    allowed_hosts TEXT,
    owner TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    accessed_at BIGINT,
    expires_at BIGINT,
    not_before BIGINT,
    deleted_at BIGINT,
    UNIQUE (tenant_id, path)
);
CREATE TABLE secret_tags (
    secret_id TEXT NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (secret_id, key)
);
CREATE INDEX secret_tags_kv ON secret_tags(key, value);
CREATE TABLE secret_versions (
    secret_id TEXT NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,
    version BIGINT NOT NULL,
    kid TEXT,
    wrapped_key {bytes},
    ciphertext {bytes},
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    PRIMARY KEY (secret_id, version)
);
CREATE INDEX secret_versions_kid ON secret_versions(kid);
CREATE TABLE audit_heads (
    tenant_id TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TABLE audit_events (
    tenant_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    path TEXT,
    actor TEXT NOT NULL,
    actor_description TEXT,
    ip TEXT,
    user_agent TEXT,
    timestamp_ms BIGINT NOT NULL,
    success BIGINT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);
CREATE INDEX audit_events_time ON audit_events(tenant_id, timestamp_ms);
INSERT INTO audit_heads (tenant_id, seq, hash) VALUES ('_system', 0, '0000000000000000000000000000000000000000000000000000000000000000');
