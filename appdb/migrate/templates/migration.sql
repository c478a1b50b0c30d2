-- {id}: {title}
--
-- Why this change, and what state it converges from. The engine owns transactions and
-- sets lock_timeout and statement_timeout for every step; every step must be safe to
-- run again (IF NOT EXISTS, or a DO block that checks the catalog first).
-- Split work that needs more than one transaction with step markers:
--   -- appdb:step NAME [transaction=false] [statement_timeout=30min]

-- appdb:step main
