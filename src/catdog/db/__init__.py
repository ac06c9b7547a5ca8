"""The database layer: SQLAlchemy models, Alembic migrations, the batched prediction writer and the queries."""
