ALTER TABLE secrets ADD COLUMN created_by_id TEXT;
ALTER TABLE secrets ADD COLUMN created_by_description TEXT;
ALTER TABLE secret_versions ADD COLUMN structured BIGINT NOT NULL DEFAULT 0
