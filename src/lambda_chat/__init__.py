"""lambda-chat: an AWS Lambda function that turns a chat request into an OpenAI chat completion."""
