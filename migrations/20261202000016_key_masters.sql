-- Which master key wraps each key: the start-up check (is every key under a
-- master this process has?) and `roster keys rotate-master` look keys up by
-- it, without reading the whole table.
CREATE INDEX data_keys_master ON data_keys (master_id);
