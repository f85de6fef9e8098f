"""A local run recorded as AWS responses: reader.py answers them to the CLI and the report, writer.py records
them (the demo imports only the writer)."""
