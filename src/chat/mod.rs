//! The Tencent Cloud Chat REST API: UserSig, client, rate limiter and wire types.

pub mod usersig;
