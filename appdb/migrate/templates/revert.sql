-- Revert of {id}: {title}
--
-- Runs from the copy stored in the ledger when {id} was applied, so it works after a
-- code rollback removed the files. If it would lose data, refuse unless
-- current_setting('appdb.allow_data_loss', true) = 'on' (RAISE ... USING ERRCODE = 'AP001').
-- A revert with nothing worth restoring is a documented no-op: say why here.

-- appdb:step main
