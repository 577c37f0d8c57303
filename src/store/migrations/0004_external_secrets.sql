ALTER TABLE secrets ADD COLUMN managed_mode TEXT NOT NULL DEFAULT 'airlock_managed';
ALTER TABLE secrets ADD COLUMN status TEXT NOT NULL DEFAULT 'active';
ALTER TABLE secrets ADD COLUMN provider_config_id TEXT;
ALTER TABLE secrets ADD COLUMN external_ref TEXT;
ALTER TABLE secrets ADD COLUMN provider_version_ref TEXT;
ALTER TABLE secrets ADD COLUMN last_rotated_at BIGINT;
ALTER TABLE secret_versions ADD COLUMN external_ref TEXT;
ALTER TABLE secret_versions ADD COLUMN provider_version_ref TEXT;
CREATE INDEX secrets_external_ref ON secrets(tenant_id, external_ref)
