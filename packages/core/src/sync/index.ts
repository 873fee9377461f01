export * from './sync-message-manager.js';
