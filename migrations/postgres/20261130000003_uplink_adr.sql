-- What ADR decided on each uplink (DR, TX power index, NbTrans the server wants the device
-- to use next), so that the history shows the link converging. NULL when ADR did not run.
ALTER TABLE uplinks ADD COLUMN adr_dr SMALLINT;
ALTER TABLE uplinks ADD COLUMN adr_tx_power_index SMALLINT;
ALTER TABLE uplinks ADD COLUMN adr_nb_trans SMALLINT;
