"""Dataset replay: real ICU datasets as validated, coded, event-timed raw-topic records.

Pure readers (:mod:`.physionet2019`, :mod:`.mimic3`, :mod:`.mimic2`) turn files into
:class:`~services.ingest.Outbound` records per patient in event-time order;
:func:`.source.open_source` picks the reader from the path and merges the patients;
:mod:`.publish` is the thin shell that paces and publishes them to Kafka.
"""
