"""Pure folds: event sequences in, records out. No Faust, no Kafka, no clock."""
