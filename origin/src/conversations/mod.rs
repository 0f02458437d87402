//! Conversations: threads of messages kept per principal (`store`), and the
//! `/v1/conversations` routes that create, read and continue them
//! (`handlers`; a new message is answered by the generation service).

mod handlers;
mod store;

pub use handlers::{ConversationsState, TurnSettings, router};
pub use store::{
    Conversation, ConversationError, ConversationStore, DEFAULT_PAGE_LIMIT, Message,
    NewConversation, Page,
};
