"""PostgreSQL: one server-side function appends a log entry and its completed Merkle nodes.

An append then costs a single statement while the LogHead row lock is held (instead of ~4
round trips), using PostgreSQL's built-in sha256() with the RFC 6962 prefixes: leaf =
SHA-256(0x00 ‖ entry), node = SHA-256(0x01 ‖ left ‖ right). SQLite keeps the Python path.
"""
from django.db import migrations

FUNCTION = r"""
CREATE OR REPLACE FUNCTION hallmark_log_append(p_kind text, p_body bytea, p_at timestamptz)
RETURNS bigint AS $$
DECLARE
  idx bigint;
  h bytea;
  sib bytea;
  lvl int := 0;
  i bigint;
BEGIN
  -- see registry.translog._reserve: safe because checkpoints are stored by synchronous commits
  PERFORM set_config('synchronous_commit', 'off', true);
  UPDATE registry_loghead SET size = size + 1 WHERE id = 1 RETURNING size - 1 INTO idx;
  IF idx IS NULL THEN
    INSERT INTO registry_loghead (id, size) VALUES (1, 0) ON CONFLICT DO NOTHING;
    UPDATE registry_loghead SET size = size + 1 WHERE id = 1 RETURNING size - 1 INTO idx;
  END IF;
  h := sha256('\x00'::bytea || p_body);
  INSERT INTO registry_logentry (index, kind, body, leaf_hash, created_at)
    VALUES (idx, p_kind, p_body, h, p_at);
  INSERT INTO registry_merklenode (level, index, hash) VALUES (0, idx, h);
  i := idx;
  WHILE mod(i, 2) = 1 LOOP  -- this leaf completes the perfect subtree one level up
    SELECT hash INTO STRICT sib FROM registry_merklenode WHERE level = lvl AND index = i - 1;
    h := sha256('\x01'::bytea || sib || h);
    lvl := lvl + 1;
    i := i / 2;
    INSERT INTO registry_merklenode (level, index, hash) VALUES (lvl, i, h);
  END LOOP;
  RETURN idx;
END
$$ LANGUAGE plpgsql;
"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FUNCTION)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP FUNCTION IF EXISTS hallmark_log_append(text, bytea, timestamptz)")


class Migration(migrations.Migration):
    dependencies = [("registry", "0002_fetch_claimed_at")]
    operations = [migrations.RunPython(create, drop)]
