//! The Chat REST API client.
