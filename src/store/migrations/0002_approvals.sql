CREATE TABLE approvals (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    requester_id TEXT NOT NULL,
    agent_id TEXT,
    agent_name TEXT,
    status TEXT NOT NULL,
    request TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    decided_at BIGINT,
    decided_by TEXT,
    note TEXT,
    token_id TEXT
);
CREATE INDEX approvals_status ON approvals(tenant_id, status, created_at);
CREATE INDEX credentials_agent ON credentials(agent_id);
CREATE INDEX credentials_minted_by ON credentials(minted_by)
