-- Change log for the Infoclinica extractor's delta sync (issue 3).
--
-- Installs a table that triggers on CLIENTS fill with one row per insert,
-- update or delete, and a sequence for its IDs. The extractor reads the
-- unprocessed rows, publishes the current state of their patients, and only
-- after the bus acknowledged them sets PROCESSED = 'Y' on exactly those IDs.
--
-- Run it once per database, as the owner of CLIENTS (or SYSDBA):
--   isql-fb -user SYSDBA -password … -ch WIN1251 host:/path/clinic.fdb -i changelog.sql
-- Then give the extractor's user (Srp):
--   GRANT SELECT ON CLIENTS TO ETL_READER;
--   GRANT SELECT, UPDATE (PROCESSED) ON ETL_CLIENTS_LOG TO ETL_READER;
--
-- The trigger writes one small row per change in the hospital's own
-- transaction: a rolled-back change logs nothing, a committed one always
-- logs. Processed rows can be purged by the DBA at any time, e.g.
--   DELETE FROM ETL_CLIENTS_LOG WHERE PROCESSED = 'Y' AND CHANGED_AT < DATEADD(-7 DAY TO CURRENT_TIMESTAMP);
-- The infoclinica-extractor reads it by the name set in
-- databases.changelog.table (default ETL_CLIENTS_LOG). The same file is
-- applied by `infoclinica-extractor create-sample-db`.

CREATE SEQUENCE ETL_CLIENTS_LOG_SEQ;

CREATE TABLE ETL_CLIENTS_LOG (
    ID          BIGINT NOT NULL,
    PCODE       BIGINT NOT NULL,
    FILIAL      INTEGER,
    OPERATION   CHAR(1) NOT NULL,
    CHANGED_AT  TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL,
    PROCESSED   CHAR(1) DEFAULT 'N' NOT NULL,
    CONSTRAINT PK_ETL_CLIENTS_LOG PRIMARY KEY (ID),
    CONSTRAINT CK_ETL_CLIENTS_LOG_OP CHECK (OPERATION IN ('I', 'U', 'D')),
    CONSTRAINT CK_ETL_CLIENTS_LOG_PROC CHECK (PROCESSED IN ('N', 'Y'))
);

-- The extractor asks for WHERE PROCESSED = 'N' ORDER BY ID.
CREATE INDEX IX_ETL_CLIENTS_LOG_PROC ON ETL_CLIENTS_LOG (PROCESSED, ID);

SET TERM ^ ;

CREATE OR ALTER TRIGGER ETL_CLIENTS_CHLOG FOR CLIENTS
ACTIVE AFTER INSERT OR UPDATE OR DELETE POSITION 100
AS
BEGIN
  IF (DELETING) THEN
    INSERT INTO ETL_CLIENTS_LOG (ID, PCODE, FILIAL, OPERATION)
    VALUES (NEXT VALUE FOR ETL_CLIENTS_LOG_SEQ, OLD.PCODE, OLD.FILIAL, 'D');
  ELSE
  BEGIN
    -- A PCODE changed in place: the old key is gone.
    IF (UPDATING AND OLD.PCODE IS DISTINCT FROM NEW.PCODE) THEN
      INSERT INTO ETL_CLIENTS_LOG (ID, PCODE, FILIAL, OPERATION)
      VALUES (NEXT VALUE FOR ETL_CLIENTS_LOG_SEQ, OLD.PCODE, OLD.FILIAL, 'D');
    INSERT INTO ETL_CLIENTS_LOG (ID, PCODE, FILIAL, OPERATION)
    VALUES (NEXT VALUE FOR ETL_CLIENTS_LOG_SEQ, NEW.PCODE, NEW.FILIAL, IIF(INSERTING, 'I', 'U'));
  END
END^

SET TERM ; ^
