"""Django's PostgreSQL backend with a cheaper pool connection check (see ``base``)."""
