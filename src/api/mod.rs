//! The wire format: the JSON request and response types of every route, exactly the names of
//! `docs/api.md`, and the errors a request can end in with the body they are answered with.
//! Unknown request fields are rejected so a typo never silently changes an experiment.
//!
//! [`rollouts`] is `POST /rollouts` (request, effective parameters, answer, stream lines),
//! [`weights`] is `POST /weights` (and the in-flight policy an update applies), [`info`] is
//! `GET /info`, [`error`] is every error answer; [`openai`] is OpenAI's dialect with vLLM's
//! extensions (`/v1/completions`, `/v1/chat/completions`, `/v1/models`, `/tokenize`,
//! `/detokenize`); [`vllm`] and [`sglang`] are those engines' own generation and control routes,
//! as the RL frameworks call them. The types are plain data: the rollout layer
//! fills them, the HTTP layer reads and writes them.
//!
//! It may import `engine` (chat messages, finish reasons, engine errors) and `stats` (the
//! nucleus rule); nothing above.

pub mod error;
pub mod info;
pub mod openai;
pub mod rollouts;
pub mod sglang;
pub mod vllm;
pub mod weights;
