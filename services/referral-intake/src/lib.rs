//! referral-intake
