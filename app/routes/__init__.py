"""One router per resource: compress, decompress, jobs, models, and the operational endpoints."""
