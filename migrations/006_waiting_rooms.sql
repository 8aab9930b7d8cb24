-- 006: a basket's waiting room settings (`waitingRoom`: admitPerMinute, admissionSeconds), kept
-- with its other settings (latest by `settings_seq`); NULL for a basket without a room. The queue
-- itself lives in Redis only.

ALTER TABLE baskets ADD COLUMN room_admit_per_minute integer, ADD COLUMN room_admission_seconds integer;
